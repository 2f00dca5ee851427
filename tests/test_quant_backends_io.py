"""Real INT8 (torch._int_mm) against the simulated path, bitsandbytes conversion, save -> reload."""
import copy
import warnings

import pytest
import torch
from torch import nn

import sysq
from sysq import get_adapter
from sysq.errors import SysqError
from sysq.quant import QuantLinear, get_recipe, quantize, save
from sysq.quant.kernels import Int8Linear, int_mm
from sysq.quant.math import quantize as int_codes
from tiny_models import VOCAB, tiny_model


@pytest.mark.parametrize("recipe", ["w8a8", "w8a8-static"])
def test_int_mm_agrees_with_the_simulated_path_to_the_last_rounding_step(recipe):
    r = get_recipe(recipe)
    lin = nn.Linear(96, 40)
    ql = QuantLinear(lin, r.weight, r.act, "t")
    x = torch.randn(3, 7, 96)
    x[..., 11] *= 30
    ql.start_calibration()
    ql(x)
    ql.finish_calibration()
    ql.quantize_weight()
    real = Int8Linear(ql)
    # the same integer codes for x ...
    x2 = x.reshape(-1, 96)
    s = ql.act_scale.reshape(1, 1) if not r.act.dynamic else \
        x2.abs().amax(dim=1, keepdim=True).clamp_min(1e-10) / 127
    qx = int_codes(x2, s, 0.0, 8)
    assert torch.equal(ql.quantize_input(x).reshape(-1, 96), qx.float() * s)
    # ... the integer accumulation is exact ...
    acc = int_mm(qx, real.qweight.t())
    assert torch.equal(acc.double(), qx.double() @ ql.codes().double().t())
    # ... and the outputs differ only by float rounding of the rescale
    sim, out = ql(x), real(x)
    torch.testing.assert_close(out, sim, rtol=1e-5, atol=1e-5 * float(sim.abs().max()))
    assert not torch.equal(torch.zeros_like(out), out)


def test_int8_backend_on_a_model_matches_the_simulation():
    base = tiny_model("llama")
    ids = torch.randint(3, VOCAB, (2, 16))
    sim, real = copy.deepcopy(base), copy.deepcopy(base)
    quantize(sim, "w8a8-static", calib=ids, quiet=True)
    quantize(real, "w8a8-static-int", calib=ids, quiet=True)
    assert all(isinstance(r.module, Int8Linear) for r in get_adapter(real).linear_refs())
    with torch.no_grad():
        torch.testing.assert_close(real(ids).logits, sim(ids).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("recipe, cls", [("bnb-int8", "Linear8bitLt"), ("bnb-nf4", "Linear4bit")])
def test_bitsandbytes_conversion_of_a_loaded_model(recipe, cls):
    model = tiny_model("llama")
    ids = torch.randint(3, VOCAB, (2, 16))
    with torch.no_grad():
        ref = model(ids).logits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = quantize(model, recipe, quiet=True)
        with torch.no_grad():
            out = model(ids).logits
    assert s.schemes == {cls: len(get_adapter(model).linear_refs())}
    assert s.bytes_after < s.bytes_before
    rel = float((out - ref).norm() / ref.norm())
    assert 0 < rel < (0.02 if recipe == "bnb-int8" else 0.2)


@pytest.mark.parametrize("recipe", [
    "w8a8-static+kv4", "w8a16+kv4+kvrot", "w4a16", "w4a16+gptq", "w4a16-g32+fz", "w4a16-pc+fz+gptq",
    {"base": "w4a4", "act": {"preserve_positions": [0], "preserve_threshold": 20.0},
     "preserve_channels": {"model.layers.1.mlp.down_proj": [2, 7]}, "preserve_channels_bits": 8},
])
def test_save_reload_gives_identical_logits(recipe, tmp_path, tiny_tokenizer):
    model = tiny_model("llama", tie_word_embeddings=True)
    calib = torch.randint(3, VOCAB, (4, 16))
    ids = torch.randint(3, VOCAB, (2, 16))
    quantize(model, recipe, calib=calib, quiet=True)
    with torch.no_grad():
        ref = model(ids).logits
    out = save(model, tmp_path / "q", tiny_tokenizer)
    again, tok = sysq.load(str(out))          # sysq.load dispatches to load_quantized for sysq folders
    assert tok is not None and isinstance(again.get_submodule("model.layers.0.self_attn.q_proj"), QuantLinear)
    with torch.no_grad():
        assert torch.equal(again(ids).logits, ref)


def test_float_zero_point_int4_round_trips_exactly(tmp_path):
    """Codes, scales and float zero points come back bit for bit; a weight on the format's own grid is exact."""
    from safetensors.torch import load_file
    model = tiny_model("llama")
    lin = model.get_submodule("model.layers.0.mlp.down_proj")
    g = torch.Generator().manual_seed(0)
    u = torch.randint(0, 16, lin.weight.shape, generator=g).float()      # a Q4_1-style grid: d * u + m per 32
    d = torch.rand(lin.weight.shape[0], lin.weight.shape[1] // 32, 1, generator=g).half().float() / 64
    m = -(torch.rand(d.shape, generator=g).half().float() / 8)
    u.view(*d.shape[:2], 32)[..., 0], u.view(*d.shape[:2], 32)[..., 1] = 0, 15
    on_grid = (u.view(*d.shape[:2], 32) * d + m).reshape(lin.weight.shape)
    with torch.no_grad():
        lin.weight.copy_(on_grid)
    quantize(model, "w4a16-g32+fz", quiet=True)
    q = model.get_submodule("model.layers.0.mlp.down_proj")
    assert q.w_zero.dtype == torch.float32 and torch.equal(q.dequantized_weight(), on_grid)
    save(model, tmp_path / "q")
    t = load_file(str(tmp_path / "q" / "sysq_model.safetensors"))
    assert t["model.layers.0.mlp.down_proj.qweight"].dtype == torch.uint8       # packed two per byte
    again, _ = sysq.load(str(tmp_path / "q"))
    for ref in get_adapter(model).linear_refs():
        a, b = ref.module, again.get_submodule(ref.name)
        assert b.weight_spec.zero_point == "float"
        for name in ("qweight", "w_scale", "w_zero"):
            assert torch.equal(getattr(a, name), getattr(b, name)), (ref.name, name)


def test_int4_is_stored_packed_on_disk(tmp_path):
    from safetensors.torch import load_file
    model = tiny_model("llama")
    quantize(model, "w4a16-pc", quiet=True)
    save(model, tmp_path / "q")
    t = load_file(str(tmp_path / "q" / "sysq_model.safetensors"))
    q = t["model.layers.0.mlp.down_proj.qweight"]
    assert q.dtype == torch.uint8 and q.shape == (64, 64)   # [out, in / 2] for in = 128
    assert "model.layers.0.mlp.down_proj.weight" not in t


def test_plain_from_pretrained_fails_loudly(tmp_path):
    from transformers import AutoModelForCausalLM
    model = tiny_model("llama")
    quantize(model, "w8a16", quiet=True)
    save(model, tmp_path / "q")
    with pytest.raises(OSError, match="no file named model.safetensors"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "q")


def test_saving_what_cannot_be_reloaded_is_refused(tmp_path):
    model = tiny_model("llama")
    quantize(model, "w8a8-int", quiet=True)
    with pytest.raises(SysqError, match="real kernel .int8 torch._int_mm.; save the simulated model"):
        save(model, tmp_path / "q")
    assert not (tmp_path / "q").exists()


@pytest.mark.slow
def test_real_smollm2_static_per_tensor_scales_break_where_per_token_ones_hold(smollm2):
    model, tok = smollm2
    ids = sysq.windows("wikitext2", tok, n=1, seqlen=48).ids
    calib = sysq.calibration(tok, n=1, seqlen=48)
    with torch.no_grad():
        ref = model(ids).logits
    err = {}
    for name in ("w8a8", "w8a8-static"):
        m = copy.deepcopy(model)
        quantize(m, name, calib=calib, quiet=True)
        with torch.no_grad():
            err[name] = float((m(ids).logits - ref).norm() / ref.norm())
        del m
    assert err["w8a8"] < err["w8a8-static"], err


def test_save_reload_keeps_mitigations_online_rotation(tmp_path):
    from sysq.mitigate.rotate import rotate
    model = tiny_model("llama", tie_word_embeddings=True)
    ids = torch.randint(3, VOCAB, (2, 16))
    rotate(model)                      # residual + heads + online Hadamard on down_proj's input
    quantize(model, "w4a4", quiet=True)
    with torch.no_grad():
        ref = model(ids).logits
    save(model, tmp_path / "q")
    again, _ = sysq.load(str(tmp_path / "q"))
    with torch.no_grad():
        assert torch.equal(again(ids).logits, ref)
    # without the hook the reloaded model would compute something else: the hook is load-bearing
    down = get_adapter(again).down(0)
    down._sysq_online_handle.remove()
    with torch.no_grad():
        assert not torch.allclose(again(ids).logits, ref, atol=1e-3)
