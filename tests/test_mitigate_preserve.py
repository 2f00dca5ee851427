"""preserve-tokens on a tiny model with a planted outlier (a huge down_proj input on token 0 in one
channel, as SmolLM2's BOS shows): under w8a8-static it must measurably beat no mitigation."""
import copy

import torch

from sysq.arch import get_adapter
import sysq
from sysq.mitigate.api import mitigate, plan
from sysq.mitigate.plan import PreserveTokens
from sysq.mitigate.preserve import PrefixModel
from sysq.quant.api import calibrate, prepare, quantize_weights

from mitigate_tiny import logits, tiny, tokens
from tiny_models import plant_bos_outlier

BOS, CH, J = 1, 5, 7


def planted():
    """Token 0 (BOS) gets a residual direction no other token has; gate/up row J reads it, so the down_proj
    input of layer 0 has a value ~1e3-1e4 at (token 0, channel J); W_down[:, J] is tiny so it stays benign."""
    return plant_bos_outlier(tiny("llama"), BOS, CH, J, quiet_attention=True)


def batch():
    ids = tokens(8, 32)
    ids[:, 0] = BOS
    return ids


def err(model, ref, ids):
    return (logits(model, ids) - ref).pow(2).mean().item()


def quantized(model, method, ids, **pt):
    m = copy.deepcopy(model)
    p = plan(None, "w8a8-static", method)
    if pt and p.preserve_tokens is not None:
        p.preserve_tokens = PreserveTokens(**pt)
    sysq.quantize(m, mitigate(m, p, ids, quiet=True), ids, quiet=True)
    return m


def test_the_outlier_is_planted():
    model, ids = planted(), batch()
    seen = {}
    down = get_adapter(model).down(0)
    h = down.register_forward_pre_hook(lambda mod, a: seen.__setitem__("x", a[0].detach()))
    logits(model, ids)
    h.remove()
    x = seen["x"].abs()
    assert x[:, 0, J].min() > 100 * x[:, 1:].max()


def test_preserve_tokens_beats_none_under_w8a8_static():
    model, calib, ids = planted(), batch(), batch()
    ref = logits(model, ids)
    e_none = err(quantized(model, "none", calib), ref, ids)
    e_pos = err(quantized(model, "preserve-tokens", calib), ref, ids)                     # BOS position
    e_thr = err(quantized(model, "preserve-tokens", calib, threshold=100.0, positions=[]), ref, ids)  # run-time rule
    print("mse none", e_none, "positions", e_pos, "threshold", e_thr)
    assert e_pos < e_none / 4, (e_pos, e_none)
    assert e_thr < e_none / 4, (e_thr, e_none)


def test_prefix_form_beats_none():
    model, calib, ids = planted(), batch(), batch()
    ref = logits(model, ids)
    q = copy.deepcopy(model)
    prepare(q, "w8a8-static")
    wrapped = PrefixModel(model, q, prefix=1)
    calibrate(wrapped, calib, quiet=True)          # the quantized model never sees the BOS token
    quantize_weights(q, "w8a8-static")
    e_prefix = (logits(wrapped, ids) - ref).pow(2).mean().item()
    e_none = err(quantized(model, "none", calib), ref, ids)
    assert e_prefix < e_none / 4, (e_prefix, e_none)
    # and in float the prefix model is the model itself
    assert torch.allclose(logits(PrefixModel(model, copy.deepcopy(model), 1), ids), ref, atol=1e-4)


def test_before_after_panel_sees_the_planted_outlier_and_its_mitigation(tmp_path):
    from sysq.detect import OutlierReport, detect
    from sysq.mitigate.compare import before_after
    model, ids = planted(), batch()
    down0 = get_adapter(model).linear_refs()[[r.role for r in get_adapter(model).linear_refs()].index("down")].name
    report = detect(model, ids, quiet=True)
    p = plan(report, "w8a8-static", "rotate+preserve-tokens")
    ref = logits(model, ids)
    after, panel = before_after(model, report, p, ids, ids, quiet=True)
    # the float transforms kept the function: float32 round-off scales with the logits (up to ~290 here), and on
    # some CPUs it reached 1.2e-3 at a small logit, so the bound is relative to the largest
    assert (logits(model, ids) - ref).abs().max() < 1e-5 * ref.abs().max()
    l0 = panel["layers"][0]
    assert l0["down_in_before"] > 100 and l0["resid_pos_before"] == 0
    assert l0["down_in_after"] < l0["down_in_before"] / 4           # the online Hadamard spreads the channel
    s = panel["scales"][down0]
    assert abs(s["before"] * 127 - l0["down_in_before"]) < 1e-3 * l0["down_in_before"]   # same windows, same max
    assert s["channel_before"] == J
    assert s["after"] < s["before"] / 20                            # BOS no longer sets the static scale
    assert panel["summary"]["after"]["largest"] < panel["summary"]["before"]["largest"]
    out = report.save(tmp_path / "r")
    assert "Before / after mitigation" in (out / "report.md").read_text()
    assert (out / "plots" / "before_after.png").is_file()
    assert OutlierReport.load(out).mitigation["scales"][down0] == s
