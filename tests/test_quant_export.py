"""compressed-tensors export: every format round-trips through plain transformers on a tiny model with sysq's
logits, mitigation that folds into weights travels in the weights, and what cannot travel is refused by name."""
import copy

import pytest
import torch

import sysq
from sysq.errors import SysqError
from sysq.mitigate.preserve import PrefixModel
from sysq.quant.export import load_with_transformers
from tiny_models import VOCAB, plant_bos_outlier, tiny_model

IDS = torch.randint(3, VOCAB, (2, 24), generator=torch.Generator().manual_seed(3))

# recipe -> (compressed-tensors format, bound on max |logit difference| relative to the logits' max)
FORMATS = {
    # same codes, same static input scale; sysq's fp32 twin multiplies the codes as an int8 kernel does, the
    # reference decompression multiplies dequantized values: fp32 rounding apart (docs/KERNELS.md)
    "w8a8-static": ("int-quantized", 1e-6),
    "w8a8": ("int-quantized", 0.02),            # dynamic per-token scales: compressed-tensors rounds amax / 127.5
    "w4a16": ("pack-quantized", 0.0),           # asymmetric groups (halved to divide 64): integer zero points
    "w4a16-pc": ("pack-quantized", 0.0),
    "w4a16-sym": ("pack-quantized", 0.0),
    "w8a16": ("pack-quantized", 0.0),
    # FP8 e4m3 (QuantSpec type 'float'): per-channel weight scales, amax / 448 activation scales as sysq computes
    "w8a8-fp8-static": ("float-quantized", 0.0),
    "w8a8-fp8": ("float-quantized", 0.0),
}
RECIPES = {"w4a16-sym": {"base": "w4a16", "weight": {"symmetric": True, "group_size": 32}, "name": "w4a16-sym"}}


def _logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_format_round_trips_through_plain_transformers(name, tmp_path):
    fmt, bound = FORMATS[name]
    model = tiny_model("llama", tie_word_embeddings=name == "w8a8-static")
    sysq.quantize(model, RECIPES.get(name, name), IDS, quiet=True)
    out = sysq.save(model, tmp_path / "ct", format="compressed-tensors")
    assert sysq.quant.export.json.loads((out / "config.json").read_text())["quantization_config"]["format"] == fmt
    ref, got = _logits(model), _logits(load_with_transformers(out, quiet=True))
    err = float((got - ref).abs().max() / ref.abs().max())
    assert err <= bound, (name, err)


def test_ragged_group_sizes_are_written_at_the_smallest_one_exactly(tmp_path):
    """SmolLM2's 576-wide inputs take g64 under a g128 recipe: the export repeats each g128 (scale, zero) over two
    g64 groups, so one config group holds every linear and the logits stay identical."""
    model = tiny_model("llama", hidden_size=96, intermediate_size=256, head_dim=24)   # 96 % 128 != 0: g32 there
    sysq.quantize(model, "w4a16", quiet=True)
    assert {q.group_size for q in sysq.quant.quant_linears(model)} == {32, 128}
    out = sysq.save(model, tmp_path / "ct", format="compressed-tensors")
    groups = sysq.quant.export.json.loads((out / "config.json").read_text())["quantization_config"]["config_groups"]
    assert [g["weights"]["group_size"] for g in groups.values()] == [32]
    assert torch.equal(_logits(model), _logits(load_with_transformers(out, quiet=True)))


def test_an_engine_plan_travels_in_the_weights(tmp_path):
    """auto restricted to the engine (residual and head rotations, smoothing, per-token scales where the outlier
    token lands) on a model with a planted outlier: the export reloads in plain transformers with sysq's logits
    (up to compressed-tensors' per-token rounding), with one config group per activation scheme."""
    model = plant_bos_outlier(tiny_model("llama"))
    report = sysq.detect(model, IDS, quiet=True)
    plan = sysq.plan(report, "w8a8-static", target="engine")
    assert plan.rotate is not None and not plan.rotate.down and plan.preserve_tokens is None
    sysq.quantize(model, sysq.mitigate(model, plan, IDS, report=report, quiet=True), IDS, quiet=True)
    assert plan.token_scales.linears == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    out = sysq.save(model, tmp_path / "ct", format="compressed-tensors")
    assert (out / "plan.yaml").is_file()
    groups = sysq.quant.export.json.loads((out / "config.json").read_text())["quantization_config"]["config_groups"]
    acts = sorted((g["input_activations"]["strategy"], len(g["targets"])) for g in groups.values())
    assert acts == [("tensor", 12), ("token", 2)]
    ref, got = _logits(model), _logits(load_with_transformers(out, quiet=True))
    assert float((got - ref).abs().max() / ref.abs().max()) < 0.02


def _refusal(model, tmp_path) -> str:
    with pytest.raises(SysqError) as e:
        sysq.save(model, tmp_path / "no", format="compressed-tensors")
    assert not (tmp_path / "no").exists()
    return str(e.value)


def test_what_no_engine_runs_is_refused_by_name(tmp_path):
    base = plant_bos_outlier(tiny_model("llama"))
    report = sysq.detect(base, IDS, quiet=True)

    m = copy.deepcopy(base)
    sysq.quantize(m, sysq.mitigate(m, sysq.plan(report, "w8a8-static", "preserve-tokens"), IDS, quiet=True), IDS,
                  quiet=True)
    assert "run-time preserved-token rule" in _refusal(m, tmp_path)

    m = copy.deepcopy(base)
    sysq.quantize(m, sysq.mitigate(m, sysq.plan(report, "w4a16", "preserve-channels"), IDS, report=report,
                                   quiet=True), IDS, quiet=True)
    assert "preserved input channels" in _refusal(m, tmp_path)

    m = copy.deepcopy(base)
    sysq.quantize(m, sysq.mitigate(m, sysq.plan(report, "w8a8", "rotate"), IDS, quiet=True), IDS, quiet=True)
    assert "online down_proj Hadamard" in _refusal(m, tmp_path)

    m = copy.deepcopy(base)
    sysq.quantize(m, "w8a8+kv8", IDS, quiet=True)
    assert "KV-cache" in _refusal(m, tmp_path)

    m = copy.deepcopy(base)
    sysq.quantize(m, "w4a8", IDS, quiet=True)
    assert "int8 W8A8" in _refusal(m, tmp_path)

    m = copy.deepcopy(base)
    sysq.quantize(m, "w8a8", IDS, quiet=True)
    assert "FP-prefix" in _refusal(PrefixModel(copy.deepcopy(base), m, 1), tmp_path)

    assert "nothing is quantized" in _refusal(copy.deepcopy(base), tmp_path)
