"""Static FP8 accuracy tools (issue 11): GPTQ on the e4m3 grid, linears kept in float by a plan."""
import copy

import torch

from sysq.quant import QuantLinear, get_recipe, quantize
from sysq.quant.gptq import gptq_quantize
from sysq.quant.math import FP8, FP8_MAX, dequantize_tensor, quantize_tensor
from tiny_models import VOCAB, tiny_model


def _correlated_inputs(n=512, d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) @ (torch.randn(d, d, generator=g) / d ** 0.5)
    x[:, :4] *= 8
    return x


def test_gptq_on_the_e4m3_grid_beats_round_to_nearest_on_the_layer_output():
    x = _correlated_inputs()
    w = torch.randn(48, 64)
    H = 2 * x.t() @ x / x.shape[0]
    spec = get_recipe("w8a8-fp8-static").weight
    for act_order in (False, True):
        q, s, z = gptq_quantize(w, H, spec, None, block_size=16, act_order=act_order)
        assert q.dtype == FP8 and s.shape == (48, 1) and bool((z == 0).all())
        w_gptq = q.float() * s
        assert bool((w_gptq.abs() <= s * FP8_MAX * (1 + 1e-6)).all())   # codes saturate at +-448 per row
        qr, sr, zr = quantize_tensor(w, 8, True, "channel", type="float")
        w_rtn = dequantize_tensor(qr, sr, zr)
        err_gptq, err_rtn = (x @ (w_gptq - w).t()).norm(), (x @ (w_rtn - w).t()).norm()
        assert err_gptq < 0.8 * err_rtn, (act_order, float(err_gptq), float(err_rtn))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_fp8_gptq_model_helps_the_logits():
    base = tiny_model("llama", layers=2)
    calib = torch.randint(3, VOCAB, (8, 32))
    ids = torch.randint(3, VOCAB, (4, 32))
    ref = _logits(base, ids)
    errs = {}
    for name in ("w8a8-fp8-static", "w8a8-fp8-static+gptq"):
        m = copy.deepcopy(base)
        quantize(m, name, calib=calib, quiet=True)
        assert all(q.qweight.dtype == FP8 for q in m.modules() if isinstance(q, QuantLinear))
        errs[name] = float((_logits(m, ids) - ref).norm())
    assert errs["w8a8-fp8-static+gptq"] < errs["w8a8-fp8-static"], errs


def test_keep_float_keeps_the_measured_costliest_linears_and_the_plan_reloads_them(tmp_path):
    import sysq
    from sysq.mitigate.keep import linear_costs
    from sysq.mitigate.plan import MitigationPlan
    base = tiny_model("llama", layers=2)
    calib = torch.randint(3, VOCAB, (6, 32), generator=torch.Generator().manual_seed(0))
    ids = torch.randint(3, VOCAB, (4, 32), generator=torch.Generator().manual_seed(1))
    ref = _logits(base, ids)
    costs = linear_costs(base, "w8a8-fp8-static", calib)
    assert len(costs) == 14 and list(costs.values()) == sorted(costs.values(), reverse=True) and max(costs.values()) > 0
    m = copy.deepcopy(base)
    p = sysq.plan(None, "w8a8-fp8-static", "keep-float")
    sysq.quantize(m, sysq.mitigate(m, p, calib, quiet=True), calib, quiet=True)
    k = p.keep_float
    assert k.linears == list(costs)[:k.count] and 0 < k.share < 1    # the costliest, as measured alone
    kept = {n for n, mod in m.named_modules() if type(mod) is torch.nn.Linear and n != "lm_head"}
    assert kept == set(k.linears)
    none = copy.deepcopy(base)
    sysq.quantize(none, "w8a8-fp8-static", calib, quiet=True)
    assert float((_logits(m, ids) - ref).norm()) < float((_logits(none, ids) - ref).norm())
    # a saved plan names them: mitigating again with it measures nothing and keeps the same linears
    p.save(tmp_path)
    again = MitigationPlan.load(tmp_path)
    assert again.keep_float.linears == k.linears
    m2 = copy.deepcopy(base)
    sysq.quantize(m2, sysq.mitigate(m2, again, calib, quiet=True), calib, quiet=True)
    assert torch.equal(_logits(m2, ids), _logits(m, ids))


def test_measured_auto_tries_gptq_and_keep_float_for_fp8_only():
    from sysq.mitigate.api import candidates, plan
    from sysq.quant.recipes import get_recipe as recipe
    fp8 = candidates(recipe("w8a8-fp8-static"), None)
    assert "none" in fp8 and any("gptq" in c and "keep-float" in c for c in fp8)
    assert "preserve-tokens+gptq+keep-float" in fp8      # the plan that measured best had to be a candidate
    assert not any("keep-float" in c for c in candidates(recipe("w8a8-static"), None))
    # FP8 candidates are scored with the rounding they get (GPTQ), INT4 ones with RTN weights
    assert plan(None, "w8a8-fp8-static", "auto").search.proxy_rounding == "recipe"
    assert plan(None, "w4a16+gptq", "auto").search.proxy_rounding == "rtn"
