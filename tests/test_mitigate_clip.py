"""clip: the weight search lowers the weighted quantization error; activation ratios respect the floor."""
import torch

from sysq.mitigate.calib import InputStats
from sysq.mitigate.clip import activation_ratio, clip_weight
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
