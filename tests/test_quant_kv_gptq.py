"""KV-cache fake quantization (visible in a plain forward pass) and GPTQ."""
import copy

import pytest
import torch
from torch import nn

from sysq.quant import KVSpec, QuantLinear, add_kv_quant, get_recipe, quantize, remove_kv_quant
from sysq.quant.gptq import gptq_quantize
from sysq.errors import SysqError
from sysq.quant.kv import quantize_keys, quantize_kv
from sysq.quant.math import dequantize_tensor, qrange, quantize_tensor
from tiny_models import VOCAB, tiny_model


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_kv_quant_shows_in_a_plain_forward_and_removal_restores_it():
    model = tiny_model("llama")
    ids = torch.randint(3, VOCAB, (2, 20))
    ref = _logits(model, ids)
    impl = model.config._attn_implementation
    add_kv_quant(model, KVSpec(bits=8))
    e8 = float((_logits(model, ids) - ref).norm())
    add_kv_quant(model, KVSpec(bits=4))
    e4 = float((_logits(model, ids) - ref).norm())
    add_kv_quant(model, KVSpec(bits=4, granularity="channel"))
    e4c = float((_logits(model, ids) - ref).norm())
    assert 0 < e8 < e4 and e4c > 0
    remove_kv_quant(model)
    assert model.config._attn_implementation == impl
    assert torch.equal(_logits(model, ids), ref)


def test_kv_quant_works_with_eager_attention_too():
    model = tiny_model("qwen2")
    model.set_attn_implementation("eager")
    ids = torch.randint(3, VOCAB, (1, 12))
    ref = _logits(model, ids)
    quantize(model, "w8a16+kv4", quiet=True)
    assert model.config._attn_implementation == "sysq_kv_eager"
    assert not torch.equal(_logits(model, ids), ref)


def test_quantize_kv_granularities():
    k = torch.randn(2, 3, 10, 16)
    k[..., 4] += 30   # an outlier channel: per-channel scales isolate it
    per_token = quantize_kv(k, KVSpec(bits=4, granularity="token"))
    per_channel = quantize_kv(k, KVSpec(bits=4, granularity="channel"))
    assert per_token.shape == per_channel.shape == k.shape
    assert (per_channel - k).norm() < (per_token - k).norm()
    # one scale per (batch, head, token): a row of head_dim values lies on one 16-level grid
    assert len(torch.unique(per_token[0, 0, 0])) <= 16


def test_kv_preserve_positions_keeps_those_tokens_float_and_the_rest_quantized():
    k = torch.randn(2, 3, 10, 16)
    k[:, :, 0] *= 50          # the BOS / attention-sink entry
    spec = KVSpec(bits=4, preserve_positions=(0,))
    q = quantize_kv(k, spec)
    assert torch.equal(q[:, :, 0], k[:, :, 0])
    assert torch.equal(q[:, :, 1:], quantize_kv(k, KVSpec(bits=4))[:, :, 1:])   # per-token scales: the rest unchanged
    assert not torch.equal(q[:, :, 1:], k[:, :, 1:])
    g = get_recipe("w4a4+kv4g32").kv
    assert (g.bits, g.group_size, g.granularity) == (4, 32, "token")
    r = get_recipe({"base": "w8a16", "kv": {"bits": 4, "preserve_positions": [0]}})
    assert r.kv.preserve_positions == (0,) and get_recipe(r.to_dict()).kv == r.kv


def test_hadamard_rotated_keys_spread_a_large_key_channel_and_keep_the_attention_scores_exact():
    """QuaRot's R3: Q(kH) H^T. A large channel (RoPE's low frequencies) sets every token's 4-bit scale; rotated, its
    energy spreads over head_dim and the error falls. Unquantized, the rotation changes no score: (qH)(kH)^T = qk^T."""
    g = torch.Generator().manual_seed(0)
    k = torch.randn(2, 3, 40, 64, generator=g)
    k[..., 5] *= 40
    q = torch.randn(2, 3, 40, 64, generator=g)
    rot = KVSpec(bits=4, group_size=32, key_rotation=True)
    plain = KVSpec(bits=4, group_size=32)
    err = {s.key_rotation: float((q @ (quantize_keys(k, s) - k).transpose(-1, -2)).norm()) for s in (rot, plain)}
    assert err[True] < 0.7 * err[False], err
    assert torch.equal(quantize_keys(k, plain), quantize_kv(k, plain))        # off: the keys as before
    assert torch.allclose(quantize_keys(k, KVSpec(bits=8, key_rotation=True)), k, atol=0.5)
    r = get_recipe("w4a4+kv4g32+kvrot")
    assert (r.kv.bits, r.kv.group_size, r.kv.key_rotation) == (4, 32, True) and get_recipe(r.to_dict()).kv == r.kv
    assert "keys Hadamard-rotated" in r.describe() and not get_recipe("w4a4+kv4g32").kv.key_rotation
    with pytest.raises(SysqError, match=r"\+kvrot.*needs a quantized KV cache first"):
        get_recipe("w4a4+kvrot")


def test_rotated_keys_lower_the_logit_error_of_a_4bit_cache_on_a_tiny_model():
    model = tiny_model("llama", layers=2)
    with torch.no_grad():      # a large key channel, as RoPE's low-frequency pairs give real models
        k = model.model.layers[0].self_attn.k_proj.weight
        k[5] *= 30
    ids = torch.randint(3, VOCAB, (2, 24))
    ref = _logits(model, ids)
    errs = {}
    for rot in (False, True):
        add_kv_quant(model, KVSpec(bits=4, key_rotation=rot))     # head_dim 16: one group
        errs[rot] = float((_logits(model, ids) - ref).norm())
    remove_kv_quant(model)
    assert 0 < errs[True] < errs[False], errs


def _correlated_inputs(n=512, d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / d ** 0.5
    x = torch.randn(n, d, generator=g) @ mix
    x[:, :4] *= 8          # a few strong channels make H far from diagonal-uniform
    return x


def test_gptq_beats_round_to_nearest_on_the_layer_output():
    x = _correlated_inputs()
    w = torch.randn(48, 64)
    H = 2 * x.t() @ x / x.shape[0]
    for spec, g, act_order in ((get_recipe("w4a16-pc").weight, None, False),
                               (get_recipe("w4a16-g32").weight, 32, False),
                               (get_recipe("w4a16-g32").weight, 32, True)):
        q, s, z = gptq_quantize(w, H, spec, g, block_size=16, act_order=act_order)
        lo, hi = qrange(4)
        assert int(q.min()) >= lo and int(q.max()) <= hi and s.shape == (48, 64 // (g or 64))
        w_gptq = dequantize_tensor(q, s, z)
        qr, sr, zr = quantize_tensor(w, 4, spec.symmetric, spec.granularity, g)
        w_rtn = dequantize_tensor(qr, sr, zr)
        err_gptq = (x @ (w_gptq - w).t()).norm()
        err_rtn = (x @ (w_rtn - w).t()).norm()
        assert err_gptq < 0.9 * err_rtn, (g, act_order, float(err_gptq), float(err_rtn))


def test_gptq_model_quantizes_every_linear_and_helps_logits():
    base = tiny_model("llama", layers=2)
    calib = torch.randint(3, VOCAB, (8, 32))
    ids = torch.randint(3, VOCAB, (4, 32))
    ref = _logits(base, ids)
    errs = {}
    for name in ("w4a16-pc", "w4a16-pc+gptq"):
        m = copy.deepcopy(base)
        quantize(m, name, calib=calib, quiet=True)
        assert all(q.qweight is not None for q in m.modules() if isinstance(q, QuantLinear))
        errs[name] = float((_logits(m, ids) - ref).norm())
    assert errs["w4a16-pc+gptq"] < errs["w4a16-pc"]


def test_gptq_leaves_preserved_columns_in_float():
    m = tiny_model("llama")
    q = next(mod for mod in m.modules() if isinstance(mod, nn.Linear) and mod.in_features == 64)
    col = q.weight[:, 5].detach().clone()
    from sysq import get_adapter
    name = next(r.name for r in get_adapter(m).linear_refs() if r.module is q)
    quantize(m, {"base": "w4a16-pc", "method": "gptq", "preserve_channels": {name: [5]}},
             calib=torch.randint(3, VOCAB, (4, 16)), quiet=True)
    ql = next(r.module for r in get_adapter(m).linear_refs() if r.name == name)
    assert torch.equal(ql.dequantized_weight()[:, 5], col)
