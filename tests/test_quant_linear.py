"""QuantLinear, the quantize() API on tiny models, and the fields mitigation relies on."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sysq import get_adapter
from sysq.errors import SysqError
from sysq.quant import QuantLinear, QuantSpec, collect_input_stats, get_recipe, prepare, quant_linears, quantize
from sysq.quant.math import qrange
from tiny_models import VOCAB, tiny_model

W8 = get_recipe("w8a16").weight
A8_STATIC = get_recipe("w8a8-static").act


def _ids(n=4, t=24):
    return torch.randint(3, VOCAB, (n, t))


def test_weight_codes_dequantize_within_half_a_step():
    lin = nn.Linear(64, 32)
    w = lin.weight.detach().clone()
    for spec, packed in ((W8, False), (get_recipe("w4a16-g32").weight, True)):
        q = QuantLinear(copy.deepcopy(lin), spec, None, "x")
        q.quantize_weight()
        assert q.weight is None and q.packed == packed
        assert q.qweight.dtype == (torch.uint8 if packed else torch.int8)
        assert q.qweight.shape[1] == (32 if packed else 64)          # two INT4 codes per byte
        lo, hi = qrange(spec.bits)
        assert int(q.codes().min()) >= lo and int(q.codes().max()) <= hi
        step = q.w_scale.repeat_interleave(64 // q.w_scale.shape[1], dim=1)
        assert bool(((q.dequantized_weight() - w).abs() <= step / 2 + 1e-6).all())
        x = torch.randn(3, 64)
        assert torch.allclose(q(x), F.linear(x, q.dequantized_weight(), lin.bias))


def test_quantize_wraps_through_the_adapter_and_keeps_head_and_embeddings_float():
    model = tiny_model("llama")
    head = get_adapter(model).lm_head()
    quantize(model, "w8a8", quiet=True)
    refs = get_adapter(model).linear_refs()
    assert all(isinstance(r.module, QuantLinear) for r in refs)
    assert len(quant_linears(model)) == len(refs)
    assert get_adapter(model).lm_head() is head and isinstance(head, nn.Linear)
    m2 = tiny_model("llama")
    quantize(m2, {"base": "w8a16", "quantize_lm_head": True, "skip": ["down"]}, quiet=True)
    a = get_adapter(m2)
    assert isinstance(a.lm_head(), QuantLinear)
    assert all(isinstance(r.module, nn.Linear) == (r.role == "down") for r in a.linear_refs())


@pytest.mark.parametrize("family", ["llama", "qwen2", "opt", "gpt2", "phi3"])
def test_w8a8_stays_close_to_float_on_every_family(family):
    model = tiny_model(family)
    ids = _ids()
    with torch.no_grad():
        ref = model(ids).logits
        quantize(model, "w8a8-static", calib=ids, quiet=True)
        out = model(ids).logits
    rel = (out - ref).norm() / ref.norm()
    assert 0 < rel < 0.05


def test_lower_bits_give_larger_error():
    ids = _ids()
    base = tiny_model("llama")
    with torch.no_grad():
        ref = base(ids).logits
    errs = {}
    for name in ("w8a16", "w4a16-pc", "w8a8", "w4a4"):
        m = copy.deepcopy(base)
        quantize(m, name, calib=ids, quiet=True)
        with torch.no_grad():
            errs[name] = float((m(ids).logits - ref).norm())
    assert errs["w8a16"] < errs["w4a16-pc"] < errs["w4a4"]
    assert errs["w8a16"] < errs["w8a8"] < errs["w4a4"]


def test_static_recipe_without_calibration_is_an_error():
    with pytest.raises(SysqError, match="pass calibration windows"):
        quantize(tiny_model("llama"), "w8a8-static", quiet=True)


def _static_layer(act_spec, preserve_channels=None, bits=None):
    torch.manual_seed(1)
    q = QuantLinear(nn.Linear(32, 16), W8, act_spec, "t", preserve_channels=preserve_channels,
                    preserve_channels_bits=bits)
    x = torch.randn(2, 10, 32)
    return q, x


def _calibrate(q, x):
    q.start_calibration()
    q(x)
    q.finish_calibration()
    q.quantize_weight()


def test_preserved_tokens_leave_the_static_scale_and_pass_in_float():
    scales = {}
    for rule in ("none", "position", "threshold"):
        spec = {"none": A8_STATIC, "position": QuantSpec(**{**A8_STATIC.__dict__, "preserve_positions": (0,)}),
                "threshold": QuantSpec(**{**A8_STATIC.__dict__, "preserve_threshold": 50.0})}[rule]
        q, x = _static_layer(spec)
        x[:, 0, 5] = 400.0     # a massive activation on the first token, as in the paper
        _calibrate(q, x)
        scales[rule] = float(q.act_scale)
        out = q(x)
        exact = F.linear(x, q.dequantized_weight(), q.bias)
        if rule != "none":   # the preserved token is computed with float activations
            assert torch.allclose(out[:, 0], exact[:, 0], atol=1e-5)
        where = q.observer.where   # the diagnostic: which token and channel set the per-tensor scale
        assert (where["position"] == 0 and where["channel"] == 5) == (rule == "none")
    assert scales["position"] < scales["none"] / 20 and scales["threshold"] == scales["position"]


def test_preserved_channels_are_exact_and_out_of_the_range():
    q0, x = _static_layer(A8_STATIC)
    x[..., 7] = 300.0
    _calibrate(q0, x)
    q1, _ = _static_layer(A8_STATIC, preserve_channels=[7])
    _calibrate(q1, x)
    assert float(q1.act_scale) < float(q0.act_scale) / 20
    torch.manual_seed(1)
    lin = nn.Linear(32, 16)   # the same float layer as _static_layer's
    assert torch.equal(q1.dequantized_weight()[:, 7], lin.weight[:, 7].detach())
    ref = lin(x)
    assert (q1(x) - ref).norm() < (q0(x) - ref).norm() / 5
    q8, _ = _static_layer(A8_STATIC, preserve_channels=[7], bits=8)
    _calibrate(q8, x)
    assert q8.w_keep.dtype == torch.int8
    assert (q8(x) - ref).norm() < (q0(x) - ref).norm() / 5


def test_preserved_channels_live_on_the_weights_device():
    # a GPU run indexed the weight with a CPU preserve_channels (index_copy in learned rounding); meta stands in
    lin = nn.Linear(32, 16, device="meta")
    q = QuantLinear(lin, W8, None, "x", preserve_channels=[7, 3])
    assert q.preserve_channels.device == lin.weight.device
    assert q.preserve_channels.device.type == "meta"


def test_preserve_channels_in_a_recipe_reach_the_named_linear():
    model = tiny_model("llama")
    name = get_adapter(model).linear_refs()[-1].name
    quantize(model, {"base": "w4a8", "preserve_channels": {name: [3, 9]}}, quiet=True)
    q = get_adapter(model).linear_refs()[-1].module
    assert q.preserve_channels.tolist() == [3, 9]
    with pytest.raises(SysqError, match="preserve_channels names linears that are not quantized"):
        prepare(tiny_model("llama"), {"base": "w4a8", "preserve_channels": {"nope": [1]}})


def test_collect_input_stats_matches_a_direct_capture():
    model = tiny_model("llama")
    ids = _ids(3, 16)
    ref = get_adapter(model).linear_refs()[5]
    seen = []
    h = ref.module.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    stats = collect_input_stats(model, ids, quiet=True)
    h.remove()
    x = torch.cat(seen)                      # [3, 16, in]
    s = stats[ref.name]
    assert torch.equal(s.channel_absmax, x.abs().amax(dim=(0, 1)))
    assert torch.equal(s.token_maxima(), x.abs().amax(dim=-1))
    w = s.where
    assert abs(x[w["window"], w["position"], w["channel"]]) == s.absmax == float(x.abs().max())
    assert len(stats) == len(get_adapter(model).linear_refs())
