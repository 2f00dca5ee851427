"""Real kernels (sysq/quant/kernels.py) against their simulated twins, the int4 layout, FP8 recipes, refusals."""
import copy
import dataclasses

import pytest
import torch
from torch import nn

import sysq
from sysq import get_adapter
from sysq.errors import SysqError
from sysq.quant import QuantLinear, convert, get_recipe, model_bytes, quantize, save
from sysq.quant import kernels
from sysq.quant.math import FP8, FP8_MAX, fake_quantize_tensor, quantize_tensor
from sysq.quant.recipes import real_backend
from tiny_models import VOCAB, plant_bos_outlier, tiny_model

# recipe -> bound on ||real - twin|| / ||twin||. Integer and FP8 products are exact, so those paths differ from the
# simulation only by fp32 rounding (order of accumulation, the rescale); the CPU weight-only kernels take bf16
# activations and scales and return bf16 (2^-9 relative each), the "a16" of w8a16 / w4a16.
EXACT, BF16 = 1e-5, 2 ** -7
TOL = {"w8a8": EXACT, "w8a8-static": EXACT, "w8a8-fp8": EXACT, "w8a8-fp8-static": EXACT, "w8a16": BF16,
       "w4a16-g32": BF16, "w4a16-g32-sym": BF16}


def _recipe(name):
    if name == "w4a16-g32-sym":
        return get_recipe({"base": "w4a16-g32", "weight": {"symmetric": True}})
    return get_recipe(name)


def twin(recipe, x, in_f=128, out_f=48, **act):
    """A calibrated, quantized QuantLinear and its original float linear."""
    r = _recipe(recipe)
    a = r.act if r.act is None or not act else get_recipe({"base": recipe, "act": act}).act
    lin = nn.Linear(in_f, out_f)
    ql = QuantLinear(copy.deepcopy(lin), r.weight, a, "t", r.ragged)
    ql.start_calibration()
    ql(x)
    ql.finish_calibration()
    ql.quantize_weight()
    return ql, lin


def _x(seed=0, in_f=128):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 9, in_f, generator=g)
    x[..., 5] *= 40              # an outlier channel
    x[:, 0] *= 8                 # an outlier token (position 0)
    return x


@pytest.mark.parametrize("recipe", list(TOL))
def test_each_real_module_matches_its_simulated_twin_on_random_inputs(recipe):
    x = _x()
    ql, lin = twin(recipe, x)
    real = kernels.MODULES[real_backend(ql.weight_spec, ql.act_spec)](ql)
    for seed in (1, 2):      # fresh inputs, not the calibration ones
        x = _x(seed)
        with torch.no_grad():
            sim, out, ref = ql(x), real(x), lin(x)
        assert out.shape == sim.shape and out.dtype == sim.dtype and torch.isfinite(out).all()
        err = float((out - sim).norm()) / float(sim.norm())
        assert err <= TOL[recipe], recipe
        assert float((out - sim).norm()) < 0.9 * float((sim - ref).norm())    # far inside the quantization error


def twin_float(ql, x):
    """The float linear with the twin's dequantized weight (what preserved tokens see)."""
    return nn.functional.linear(x, ql.dequantized_weight(), ql.bias)


@pytest.mark.parametrize("recipe", ["w8a8-static", "w8a8-fp8-static", "w8a8-fp8"])
def test_preserved_tokens_take_the_float_path_in_the_real_module_as_in_the_twin(recipe):
    x = _x()
    ql, _ = twin(recipe, x, preserve_positions=[0], preserve_threshold=150.0)
    real = kernels.MODULES[real_backend(ql.weight_spec, ql.act_spec)](ql)
    x = _x(3)
    with torch.no_grad():
        sim, out = ql(x), real(x)
    torch.testing.assert_close(out, sim, rtol=1e-4, atol=1e-4 * float(sim.abs().max()))
    # position 0 is computed in float with the dequantized weight
    torch.testing.assert_close(out[:, 0], twin_float(ql, x)[:, 0], rtol=1e-5, atol=1e-4)


def test_fp8_codes_are_e4m3_values_with_a_448_scale_and_subnormals():
    w = torch.randn(16, 64)
    q, s, z = quantize_tensor(w, 8, True, "channel", type="float")
    assert q.dtype == FP8 and z.abs().sum() == 0
    torch.testing.assert_close(s.squeeze(1), w.abs().amax(1) / FP8_MAX)
    assert float(q.float().abs().amax()) == FP8_MAX
    # below 2^-6 of the scale e4m3 is subnormal: absolute steps of 2^-9 (0.01 -> 5 * 2^-9, 2.3% off), and under
    # 2^-10 it flushes to zero
    x = torch.tensor([[FP8_MAX, 0.01, 0.0009]])        # scale 1: x / scale = x
    xq = fake_quantize_tensor(x, 8, True, "token", type="float")
    assert xq[0, 0] == FP8_MAX and xq[0, 1] == 5 * 2.0 ** -9 and xq[0, 2] == 0
    with pytest.raises(SysqError, match="FP8 e4m3"):
        get_recipe({"base": "w8a8-fp8", "weight": {"bits": 4}})
    with pytest.raises(SysqError, match="symmetric"):
        get_recipe({"base": "w8a8-fp8", "act": {"symmetric": False}})


@pytest.mark.parametrize("symmetric, zero", [(True, None), (False, "int"), (False, "float")])
def test_int4_tinygemm_layout_round_trips(symmetric, zero):
    g = torch.Generator().manual_seed(0)
    n, k, gs = 48, 256, 64
    q = torch.randint(-8, 8, (n, k), generator=g).to(torch.int8)
    s = torch.rand(n, k // gs, generator=g) + 0.1
    z = None if zero is None else torch.randint(-8, 8, (n, k // gs), generator=g).float()
    if zero == "float":      # a float offset per group: w = q * s + m (GGUF Q4_1 / HQQ)
        z = torch.randn(n, k // gs, generator=g)
    packed, sz = kernels.tinygemm_pack(q, s, z, gs, dtype=torch.float32, float_zero=zero == "float")
    assert packed.dtype == torch.uint8 and packed.numel() == n * k // 2        # two codes per byte
    codes, s2, zf = kernels.tinygemm_unpack(packed, sz, gs, k)
    assert torch.equal(codes, q)
    torch.testing.assert_close(s2, s)
    qg, sg = q.float().reshape(n, -1, gs), s.unsqueeze(-1)
    w = qg * sg + z.unsqueeze(-1) if zero == "float" else (qg - (0 if z is None else z.unsqueeze(-1))) * sg
    torch.testing.assert_close(kernels.tinygemm_dequantize(packed, sz, gs, k), w.reshape(n, k), rtol=0, atol=1e-5)


def test_int4_layout_refuses_shapes_the_kernels_cannot_take():
    q = torch.zeros(40, 64, dtype=torch.int8)
    with pytest.raises(SysqError, match="divisible by 16"):
        kernels.tinygemm_pack(q, torch.ones(40, 2), None, 32)
    with pytest.raises(SysqError, match="group sizes"):
        kernels.tinygemm_pack(torch.zeros(48, 64, dtype=torch.int8), torch.ones(48, 4), None, 16)
    with pytest.raises(SysqError, match="group_size in"):
        get_recipe({"base": "w4a16-g32", "weight": {"group_size": 512}, "backend": "int4-wo"})
    with pytest.raises(SysqError, match="quantizers run on backend 'int8-wo'"):
        get_recipe({"base": "w8a16", "backend": "int4-wo"})
    with pytest.raises(SysqError, match="no real kernel runs this recipe"):
        get_recipe("w4a8+real")


def test_an_int4_layout_other_than_the_one_sysq_writes_is_refused_before_it_runs(monkeypatch):
    """The probe reads packed codes back through the kernel: a torch that packs another way (here: codes
    mirrored, as a swapped nibble order would read) is refused by name instead of running wrong weights."""
    real_pack = kernels._pack_for
    monkeypatch.setattr(kernels, "_pack_for", lambda dev, u, t: real_pack(dev, 15 - u, t))
    kernels._probe.cache_clear()
    try:
        with pytest.raises(SysqError, match="int4 pack layout .* is not the one sysq writes"):
            quantize(tiny_model("llama"), "w4a16-g32+real", torch.randint(3, VOCAB, (2, 16)), quiet=True)
    finally:
        kernels._probe.cache_clear()


@pytest.fixture
def no_scaled_mm(monkeypatch):
    kernels._probe.cache_clear()
    monkeypatch.delattr(torch, "_scaled_mm")
    yield
    kernels._probe.cache_clear()


def test_fp8_is_refused_with_the_fix_where_scaled_mm_is_missing(no_scaled_mm):
    model = tiny_model("llama")
    ids = torch.randint(3, VOCAB, (2, 16))
    with pytest.raises(SysqError, match=r"torch._scaled_mm does not run on cpu .*simulated recipe"):
        quantize(model, "w8a8-fp8-static+real", ids, quiet=True)
    sim = tiny_model("llama")
    quantize(sim, "w8a8-fp8-static", ids, quiet=True)      # the simulation needs no kernel
    with torch.no_grad():
        assert torch.isfinite(sim(ids).logits).all()


@pytest.mark.parametrize("recipe", ["w8a8", "w8a8-fp8-static", "w8a16", "w4a16-g32"])
def test_real_models_match_the_simulation_and_hold_only_packed_weights(recipe):
    base = tiny_model("llama", intermediate_size=256)
    ids = torch.randint(3, VOCAB, (2, 16))
    sim, real = copy.deepcopy(base), copy.deepcopy(base)
    quantize(sim, recipe, ids, quiet=True)
    s = quantize(real, recipe + "+real", ids, quiet=True)
    mods = [r.module for r in get_adapter(real).linear_refs()]
    assert all(isinstance(m, kernels.RealLinear) for m in mods)
    assert sum(s.schemes.values()) == len(mods) and all("torch." in k for k in s.schemes)
    for m in mods:       # no float copy of a weight: float buffers are per-channel/group scales only
        floats = [b for b in m.buffers() if b.is_floating_point() and b.dtype != FP8]
        assert all(b.numel() <= 2 * m.out_features * max(1, m.in_features // 32) for b in floats)
    assert model_bytes(real) < model_bytes(base)
    with torch.no_grad():
        ref, a, b = base(ids).logits, sim(ids).logits, real(ids).logits
    # through two layers: exact paths to fp32 rounding, the bf16 ones to a few bf16 roundings
    assert float((b - a).norm()) / float(a.norm()) < (1e-4 if TOL[recipe] == EXACT else 4 * BF16)
    assert float((a - ref).norm()) > 0


@pytest.mark.parametrize("recipe", ["w8a8-static", "w8a8-static-preserved", "w8a8"])
def test_fp32_int8_simulation_gives_the_real_kernels_numbers_bit_for_bit(recipe):
    """The twin multiplies the INT8 codes and rescales after, in Int8Linear's order. A static scale that a massive
    token sets rounds most values to a code of 0 or +-1; there any float-rounding difference flips codes and moves
    the perplexity (SmolLM2 w8a8-static, no mitigation: real / simulated 1.0198 on the CPU when the twin multiplied
    dequantized values), so the pin is equality, not a tolerance."""
    base = tiny_model("llama", intermediate_size=256)
    plant_bos_outlier(base)
    ids = torch.randint(3, VOCAB, (2, 16))
    ids[:, 0] = 1
    r = get_recipe({"base": "w8a8-static", "act": {"preserve_positions": [0]}}) if recipe.endswith("preserved") \
        else get_recipe(recipe)
    sim, real = copy.deepcopy(base), copy.deepcopy(base)
    quantize(sim, r, ids, quiet=True)
    quantize(real, dataclasses.replace(r, backend="int8"), ids, quiet=True)
    assert all(isinstance(m.module, kernels.Int8Linear) for m in get_adapter(real).linear_refs())
    x = torch.randint(3, VOCAB, (3, 24))
    x[:, 0] = 1
    with torch.no_grad():
        a, b, ref = sim(x).logits, real(x).logits, base(x).logits
    assert torch.equal(a, b)
    assert float((a - ref).norm()) > 1e-3 * float(ref.norm())      # quantized, not float


def test_convert_a_model_loaded_from_a_sysq_folder(tmp_path, tiny_tokenizer):
    model = tiny_model("llama", tie_word_embeddings=True)
    ids = torch.randint(3, VOCAB, (2, 16))
    quantize(model, "w8a8-fp8-static", ids, quiet=True)
    save(model, tmp_path / "q", tiny_tokenizer)
    loaded, _ = sysq.load(tmp_path / "q")
    assert loaded.model.layers[0].mlp.down_proj.qweight.dtype == FP8
    with torch.no_grad():
        a = loaded(ids).logits
        assert torch.equal(a, model(ids).logits)
        assert convert(loaded) == len(get_adapter(loaded).linear_refs())
        torch.testing.assert_close(loaded(ids).logits, a, rtol=1e-4, atol=1e-4)
    with pytest.raises(SysqError, match="save the simulated model"):
        save(loaded, tmp_path / "r")
    with pytest.raises(SysqError, match="no quantized linears"):
        convert(tiny_model("llama"))


@pytest.mark.parametrize("recipe", ["w8a8-fp8-static", "w8a8-fp8"])
def test_the_mitigation_searches_simulate_fp8_as_the_engine_runs_it(recipe):
    from sysq.mitigate.qsim import fake_act, fake_weight
    r = get_recipe(recipe)
    x = _x().reshape(-1, 128)
    ql, _ = twin(recipe, x)
    w = ql.dequantized_weight()
    torch.testing.assert_close(fake_weight(w, r.weight), w, rtol=0, atol=0)     # FP8 codes are a fixed point
    amax = float(x.abs().max())
    torch.testing.assert_close(fake_act(x, r.act, amax), ql.quantize_input(x), rtol=0, atol=0)


def test_sysq_bench_runs_fp_and_a_real_kernel_and_names_the_kernels(tmp_path):
    from sysq.cli import main
    rc = main(["bench", "--model", "config:tiny", "--rows", "fp,w4a16", "--modes", "eager", "--phases",
               "prefill,decode1", "--prefill", "1x32", "--prompt", "8", "--new", "2", "--reps", "1", "--warmup", "1",
               "--isolate", "no", "--out", str(tmp_path)])
    assert rc == 0
    import json
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [r["recipe"] for r in rows] == ["fp", "w4a16"]
    assert all(r[ph]["tokens_per_s"] > 0 for r in rows for ph in ("prefill", "decode1"))
    assert rows[1]["weights_mib"] < rows[0]["weights_mib"]
    assert any("int4pack" in k["name"] for k in rows[1]["decode1"]["kernels"])
    assert "decode1 x fp" in (tmp_path / "bench.md").read_text()


def test_bench_rounds_take_the_median_of_each_rounds_ratio_so_one_slow_spell_moves_one_round():
    from evaluation import bench

    def row(recipe, rnd, tps, rss):
        return dict(recipe=recipe, mode="eager", round=rnd, weights_mib=1.0, rss_after_mib=rss,
                    decode1=dict(tokens_per_s=tps))
    # round 2: the machine was busy while w8a16 ran (its ratio alone drops)
    rows = [row("fp", 0, 20.0, 100), row("w8a16", 0, 30.0, 70), row("fp", 1, 21.0, 101), row("w8a16", 1, 22.0, 71),
            row("fp", 2, 19.0, 99), row("w8a16", 2, 28.5, 72)]
    assert bench.round_ratios(rows, "decode1", "eager", "w8a16") == pytest.approx([1.5, 22 / 21, 1.5])
    assert bench.ratio(rows, "decode1", "eager", "w8a16") == pytest.approx(1.5)
    merged = {r["recipe"]: r for r in bench.merged_rows(rows)}
    assert merged["w8a16"]["decode1"]["tokens_per_s"] == 28.5 and merged["w8a16"]["rss_after_mib"] == 71
    assert merged["fp"]["rounds"] == 3 and merged["fp"]["decode1"]["rounds_tokens_per_s"] == [20.0, 21.0, 19.0]
    md = bench.table(rows, dict(phases=["decode1"]), "cpu")
    assert "3 rounds" in md and "decode1 eager w8a16+real / fp: 1.50x (rounds 1.50, 1.05, 1.50) (goal >= 1.3: met)" in md
    assert md.count("| w8a16 | eager |") == 1


def test_a_mitigated_model_runs_on_real_fp8_kernels_with_its_online_rotation_and_preserved_tokens():
    import dataclasses
    base = tiny_model("llama")
    calib = torch.randint(3, VOCAB, (4, 16))
    ids = torch.randint(3, VOCAB, (2, 16))
    p = sysq.plan(None, "w8a8-fp8-static", "rotate+preserve-tokens")
    sim, real = copy.deepcopy(base), copy.deepcopy(base)
    r = sysq.mitigate(sim, p, calib, quiet=True)
    sysq.mitigate(real, p, calib, quiet=True)
    sysq.quantize(sim, r, calib, quiet=True)
    sysq.quantize(real, dataclasses.replace(r, backend="fp8"), calib, quiet=True)
    down = get_adapter(real).layers()[0].mlp.down_proj
    assert isinstance(down, kernels.Fp8Linear) and down.rule is not None
    assert any(getattr(h, "carry_over", False) for h in down._forward_pre_hooks.values())   # the online Hadamard
    with torch.no_grad():
        a, b = sim(ids).logits, real(ids).logits
    assert float((b - a).norm()) / float(a.norm()) < 1e-4
