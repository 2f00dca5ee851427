"""Fused projections (sysq/quant/fuse.py): q/k/v and gate/up as one linear give the unfused model's numbers."""
import copy

import pytest
import torch
from torch import nn

from sysq import get_adapter
from sysq.errors import SysqError
from sysq.quant import convert, fuse_projections, model_bytes, quantize, save
from sysq.quant import fuse
from tiny_models import VOCAB, tiny_model


def _ids(b=2, t=9, seed=0):
    return torch.randint(3, VOCAB, (b, t), generator=torch.Generator().manual_seed(seed))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("family, groups", [("llama", [["q", "k", "v"], ["gate", "up"]]), ("opt", [["q", "k", "v"]]),
                                            ("phi3", []), ("gpt2", [])])
def test_the_adapter_names_the_linears_that_share_an_input(family, groups):
    ad = get_adapter(tiny_model(family))
    got = ad.shared_input_groups()
    assert [[r.role for r in g] for g in got] == groups * ad.num_layers
    for g in got:
        assert len({r.layer for r in g}) == 1


def test_fused_float_model_gives_the_same_logits_and_holds_the_same_bytes():
    m = tiny_model("llama")
    ref = _logits(m, _ids())
    f = copy.deepcopy(m)
    assert fuse_projections(f) == 4 and fuse_projections(f) == 0       # 2 layers x (q/k/v, gate/up); idempotent
    assert fuse.describe(f) == {"q_proj+k_proj+v_proj 64->128": 2, "gate_proj+up_proj 64->256": 2}
    assert torch.equal(_logits(f, _ids()), ref)
    assert model_bytes(f) == model_bytes(m)
    assert all(g._input is None and g._parts is None for g in fuse.groups(f))   # nothing kept after a forward


def test_a_member_called_with_another_tensor_recomputes_and_never_returns_a_stale_slice():
    m = tiny_model("llama")
    lin = {k: copy.deepcopy(v) for k, v in get_adapter(m).linears(0).items()}
    fuse_projections(m)
    new = get_adapter(m).linears(0)
    x1, x2 = torch.randn(1, 3, 64), torch.randn(1, 3, 64)
    with torch.no_grad():
        assert torch.equal(new["q"](x1), lin["q"](x1))
        assert torch.equal(new["k"](x2), lin["k"](x2))        # x1's k slice is pending: not returned for x2
        assert torch.equal(new["k"](x2), lin["k"](x2))        # called twice with one tensor: recomputed
        assert torch.equal(new["v"](x1), lin["v"](x1))


@pytest.mark.parametrize("recipe", ["w8a16", "w4a16-g32", "w8a8"])
def test_fused_quantized_models_simulated_and_real_give_the_unfused_logits(recipe):
    m = tiny_model("llama")
    quantize(m, recipe)
    ref_fake, ids = _logits(m, _ids()), _ids()
    f = copy.deepcopy(m)
    fuse_projections(f)
    assert torch.equal(_logits(f, ids), ref_fake)                 # same codes and scales, stacked
    real, real_fused = copy.deepcopy(m), copy.deepcopy(m)
    assert convert(real) == 14 and convert(real_fused, fuse=True) == 8   # a fused group converts once
    assert torch.equal(_logits(real_fused, ids), _logits(real, ids))
    assert model_bytes(real_fused) == model_bytes(real)


def test_generate_with_a_static_cache_and_a_compiled_forward_give_the_same_tokens():
    m = tiny_model("llama")
    quantize(m, "w8a16")
    real, fused = copy.deepcopy(m), copy.deepcopy(m)
    convert(real)
    convert(fused, fuse=True)
    ids = _ids(1, 6)
    kw = dict(max_new_tokens=6, do_sample=False, cache_implementation="static", pad_token_id=0)
    with torch.no_grad():
        want = real.generate(ids, **kw)
        assert torch.equal(fused.generate(ids, **kw), want)
        step = torch.compile(fused.forward, fullgraph=True)     # inductor on the CPU, no graph break
        got = step(input_ids=ids).logits
    torch.testing.assert_close(got, _logits(real, ids), rtol=0, atol=1e-5)   # inductor's fp32 reordering
    assert all(g._input is None for g in fuse.groups(fused))


def test_fusion_refuses_what_it_cannot_keep_and_save_refuses_a_fused_model(tmp_path):
    m = tiny_model("llama")
    quantize(m, "w8a16")
    convert(m)
    with pytest.raises(SysqError, match="convert\\(model, fuse=True\\)"):   # real modules: fuse before converting
        fuse_projections(m)
    h = tiny_model("llama")
    get_adapter(h).linears(0)["k"].register_forward_pre_hook(lambda mod, a: None)
    with pytest.raises(SysqError, match="forward hooks"):
        fuse_projections(h)
    q = tiny_model("llama")
    quantize(q, "w8a16")
    fuse_projections(q)
    for fmt in ("sysq", "compressed-tensors"):
        with pytest.raises(SysqError, match="save the model before fusing"):
            save(q, tmp_path / "fused", format=fmt)


def test_a_saved_model_reloads_and_fuses_to_the_same_logits(tmp_path, tiny_tokenizer):
    import sysq
    m = tiny_model("llama")
    quantize(m, "w4a16-g32")
    path = save(m, tmp_path / "q", tiny_tokenizer)
    fused = copy.deepcopy(m)
    convert(fused, fuse=True)
    loaded, _ = sysq.load(str(path))
    convert(loaded, fuse=True)
    assert torch.equal(_logits(loaded, _ids()), _logits(fused, _ids()))


def test_quantized_members_with_different_activation_scales_do_not_fuse():
    from sysq.quant import QuantLinear, get_recipe
    r = get_recipe("w8a8-static")
    qls = []
    for scale in (1.0, 2.0):
        ql = QuantLinear(nn.Linear(32, 16), r.weight, r.act, "t")
        ql.start_calibration()
        ql(torch.randn(4, 32) * scale)
        ql.finish_calibration()
        ql.quantize_weight()
        qls.append(ql)
    with pytest.raises(SysqError, match="quantized differently"):
        fuse.concatenate(qls, ["a", "b"])


def test_sysq_bench_runs_fused_rows_and_prints_the_kernel_table(tmp_path, capsys):
    import json
    from sysq.cli import main
    rc = main(["bench", "--model", "config:tiny", "--rows", "fp,fp+fused,w8a16+fused", "--modes", "eager", "--phases",
               "decode1", "--prompt", "8", "--new", "2", "--warmup", "1", "--isolate", "no", "--no-profile",
               "--kernel-table", "--profile-steps", "2", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "kernel table, w8a16+fused eager decode batch 1" in out and "int8pack" in out
    data = json.loads((tmp_path / "bench.json").read_text())
    rows = {r["recipe"]: r for r in data["rows"]}
    assert rows["fp"]["fused_groups"] == {}
    assert rows["w8a16+fused"]["fused_groups"] == {"q_proj+k_proj+v_proj 256->512": 2, "gate_proj+up_proj 256->1024": 2}
    assert any("fused" in s for s in rows["w8a16+fused"]["schemes"])
    table = rows["w8a16+fused"]["decode1"]["kernel_table"]
    int8 = next(k for k in table["kernels"] if k["name"] == "aten::_weight_int8pack_mm")
    assert int8["calls"] == 8 and int8["class"] == "GEMV/GEMM"       # per step: 2 layers x (q/k/v, o, gate/up, down)
    check = next(c for c in data["settings"]["kernel_checks"] if c["recipe"] == "w8a16")
    assert check["fused_max_diff_1row"] == 0.0
    assert "w8a16+fused / fp+fused" in (tmp_path / "bench.md").read_text()
