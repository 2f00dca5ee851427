"""clip: the weight search lowers the weighted quantization error; activation ratios respect the floor."""
import torch

from sysq.mitigate.calib import InputStats
from sysq.mitigate.clip import activation_ratio, clip_weight
from sysq.mitigate.plan import Clip
from sysq.quant.math import fake_quantize_tensor
from sysq.quant.recipes import get_recipe


def heavy(rows=64, cols=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    w[:, ::37] *= 8.0                       # a few large entries per row: clipping them should pay off
    return w


def test_weight_clipping_lowers_the_error():
    spec = get_recipe("w4a16-pc").weight
    w = heavy()
    ratios = [1.0, 0.9, 0.8, 0.7, 0.6]
    clipped, mean_ratio = clip_weight(w, spec, ratios)
    err = lambda ref, q: (q - ref).pow(2).sum().item()
    plain = fake_quantize_tensor(w, spec.bits, spec.symmetric, spec.granularity)
    after = fake_quantize_tensor(clipped, spec.bits, spec.symmetric, spec.granularity)
    assert err(w, after) < err(w, plain)
    assert mean_ratio < 1.0
    # clipping only shrinks the range: entries inside it are untouched
    inside = (w - clipped).abs() == 0
    assert inside.float().mean() > 0.9


def test_weight_clipping_per_group_keeps_shape_and_groups():
    spec = get_recipe("w4a16").weight          # asymmetric, group 128
    w = heavy(cols=256)
    clipped, _ = clip_weight(w, spec, [1.0, 0.8])
    assert clipped.shape == w.shape
    assert (clipped.abs() <= w.abs() + 1e-6).all()


def test_activation_ratio_never_cuts_the_floor():
    torch.manual_seed(0)
    x = torch.randn(2048, 32)
    x[0, 3] = 100.0                            # a systematic outlier (BOS-like) in the sample
    st = InputStats(x.abs().amax(0), x.abs().amax(0), x.pow(2).mean(0), x, torch.zeros(2048, dtype=torch.bool))
    w = torch.randn(16, 32)
    r = get_recipe("w8a8-static")
    free = activation_ratio(st, w, r, [1.0, 0.5, 0.1, 0.02], floor=0.0)
    floored = activation_ratio(st, w, r, [1.0, 0.5, 0.1, 0.02], floor=100.0)
    assert floored == 1.0                      # 100 must stay representable
    assert free < 1.0                          # without the floor the search would cut it
    assert activation_ratio(st, w, get_recipe("w8a8"), [1.0, 0.5]) == 1.0   # dynamic: nothing to clip


def test_dynamic_4bit_activation_ratio_lowers_the_output_error_and_matches_the_engine():
    from sysq.mitigate.qsim import fake_act
    from sysq.quant.linear import QuantLinear
    g = torch.Generator().manual_seed(1)
    x = torch.distributions.StudentT(3.0).sample((256, 64))       # heavy-tailed tokens: a shrunk range pays
    w = torch.randn(32, 64, generator=g)
    st = InputStats(x.abs().amax(0), x.abs().amax(0), x.pow(2).mean(0), x, torch.zeros(256, dtype=torch.bool))
    r = get_recipe("w4a4")
    ratios = [1.0, 0.9, 0.8, 0.7, 0.6]
    best = activation_ratio(st, w, r, ratios)
    err = lambda spec: (fake_act(x, spec) @ w.t() - x @ w.t()).pow(2).sum().item()
    from dataclasses import replace
    assert best < 1.0 and err(replace(r.act, clip_ratio=best)) < err(r.act)
    assert activation_ratio(st, w, get_recipe("w8a8"), ratios) == 1.0      # 8-bit dynamic: left alone
    # the search simulates what the engine computes with that ratio (QuantLinear's dynamic per-token path)
    q = QuantLinear(torch.nn.Linear(64, 32, bias=False), None, replace(r.act, clip_ratio=best))
    assert torch.equal(q.quantize_input(x), fake_act(x, replace(r.act, clip_ratio=best)))


def test_the_rules_search_a_clip_ratio_per_linear_for_4bit_dynamic_activations_only():
    from mitigate_tiny import tiny, tokens
    from sysq.mitigate.api import mitigate, plan
    from sysq.quant import quantize
    assert plan(None, "w4a4+kv4", "auto-fast").clip.activations
    assert not plan(None, "w4a8+gptq", "auto-fast").clip.activations          # 8-bit dynamic: no ratios
    model = tiny("llama")
    calib = tokens(n=4, seqlen=24)
    r = mitigate(model, plan(None, "w4a4", "clip"), calib, quiet=True)
    from sysq.arch import get_adapter
    names = {ref.name for ref in get_adapter(model).linear_refs()}
    assert set(r.act_clip_ratios) == names
    assert all(v in Clip().activation_ratios for v in r.act_clip_ratios.values())
    quantize(model, r, calib, quiet=True)            # the engine takes each linear's ratio
    from sysq.quant.api import quant_linears
    assert {q.name: q.act_spec.clip_ratio for q in quant_linears(model)} == r.act_clip_ratios
