"""The fused Triton reduction of a chunk's sites (sysq.capture.reduce_fused) in Triton's CPU interpreter, against
the torch form (reduce_stacked). Not collected by itself: the interpreter must be on before triton is first
imported, so tests/test_reduce_fused.py runs this file in a subprocess with TRITON_INTERPRET=1."""
import json
import math
import os

import pytest
import torch

from sysq import _reduce_triton as R
from sysq import capture
from sysq.capture import reduce_fused, reduce_stacked
from sysq.detect import detect
from sysq.detect.thresholds import Thresholds

assert os.environ.get("TRITON_INTERPRET") == "1", "run through tests/test_reduce_fused.py"

NAMES = ("wmax", "wsum", "massive", "med", "mean", "tok_med", "widx", "wval", "tok_max", "tok_arg", "tok_val", "bad")
SUMS = ("wsum", "mean")         # float32 sums: another order of addition


# each kernel design (sysq/_reduce_triton.py), the new ones with small tiles so that the cases below have several
# token programs and channel blocks, full and partial loop steps, C a multiple of BLOCK_C or not: split with the
# tile-wise (1D) accumulators and the prefetched loads, wide with the element-wise (2D) ones, plain loads and its
# per-token partials
KERNELS = {"fused": (None, None), "split": ((8, 32, 128, 4, 1, 1), (8, 128, 4)), "wide": ((8, 32, 64, 4, 0, 0), None)}


@pytest.fixture(params=list(KERNELS))
def kernel(request):
    R.use(request.param, *KERNELS[request.param])
    yield request.param
    R.use(R.DEFAULT)


def test_an_unknown_kernel_design_is_refused():
    with pytest.raises(ValueError, match="SYSQ_REDUCE_KERNEL"):
        R.use("fast")
    with pytest.raises(ValueError, match="multiple"):
        R.use("split", (16, 40, 64, 4))
    assert R.VARIANT == R.DEFAULT


def _sites(S, B, T, C, dtype, seed):
    """S site tensors with planted massive values, exact ties of a channel's max (two tokens, in one token block
    and across blocks), of a token's max (two channels, across channel blocks), negative maxima, zero rows."""
    g = torch.Generator().manual_seed(seed)
    xs = []
    for s in range(S):
        x = torch.randn(B, T, C, generator=g) * (0.5 + s)
        x[0, 0, 3] = 2000.0 * (s + 1)                      # massive at the first token
        x[-1, T - 1, C - 1] = -3000.0                      # negative, in the last (partial) blocks
        x[:, 2, 5] = x[:, T - 2, 5] = -900.0               # channel 5: a tie across token blocks (first wins)
        x[:, 7, 9] = x[:, 8, 9] = 700.0                    # channel 9: a tie inside a block
        x[:, 4, 1] = 800.0                                 # token 4: a tie across channel blocks ...
        x[:, 4, C - 2] = -800.0                            # ... with opposite signs (the first channel's sign)
        x[:, 6, 20] = x[:, 6, 21] = 650.0                  # token 6: inside a channel block
        x[:, 1, 11] = x[:, 17, 11] = 750.0                 # channel 11: a tie in one row of two tiles (strict >)
        x[:, 18, 12], x[:, 33, 12] = -750.0, 750.0         # channel 12: the later token in a lower row of a later tile
        x[:, 5, 2], x[:, 5, C - 3] = -820.0, 820.0         # token 5: a tie whose first channel is negative
        x[:, 9] = 0.0                                      # a token of zeros (ties everywhere)
        xs.append(x.to(dtype))
    return xs


def _compare(xs, floors, th=Thresholds()):
    below = torch.tensor([-math.inf])
    ref = reduce_stacked(torch.stack(xs), floors, below, th)
    got = reduce_fused(xs, floors, below, th)
    for name, r, g in zip(NAMES, [*ref[0], *ref[1]], [*got[0], *got[1]]):
        assert r.shape == g.shape and r.dtype == g.dtype, (name, r.shape, g.shape, r.dtype, g.dtype)
        if name in SUMS:
            torch.testing.assert_close(g, r, rtol=2e-6, atol=0, msg=name)
        else:
            assert torch.equal(g, r), (name, (g != r).nonzero()[:5])
    return ref, got


# both dtypes on the two smaller shapes (each has partial token and channel blocks, every planted tie); the three
# sites of the largest (several channel blocks, the interpreter's most costly) in bf16, what detect captures
@pytest.mark.parametrize("dtype, S,B,T,C", [(torch.bfloat16, 3, 2, 70, 300)] + [
    (dtype, *shape) for shape in [(2, 3, 37, 129), (1, 1, 130, 40)] for dtype in (torch.float32, torch.bfloat16)])
def test_fused_reduction_equals_the_torch_form(kernel, dtype, S, B, T, C):
    xs = _sites(S, B, T, C, dtype, seed=S * 100 + T)
    floors = torch.tensor([6.0, 100.0, 6.0][:S]).view(-1, 1, 1, 1)     # sites with different floors
    ref, _ = _compare(xs, floors)
    assert ref[0][2].sum() > 0 and int(ref[1][3].sum()) == 0          # massive values counted, all finite


def test_massive_counts_at_the_threshold(kernel):
    """Values exactly at massive_rel x median (counted: >=) and exactly at the floor (not counted: >)."""
    x = torch.ones(2, 70, 140)                     # median 1.0
    x[0, :5, 0] = 1000.0                           # = 1000 x median: massive
    x[0, 5:9, 1] = torch.tensor(1000.0).nextafter(torch.tensor(0.0))   # just below
    x[1, :3, 2] = 6.0                              # at a floor above 1000 x median? no: at the input floor
    _compare([x, x * 0.006], torch.tensor([6.0, 100.0]).view(-1, 1, 1, 1))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_are_flagged(kernel, bad):
    xs = _sites(2, 2, 40, 140, torch.bfloat16, seed=1)
    xs[1][1, 30, 7] = bad
    xs[1][0, 3, 139] = bad
    below = torch.tensor([-math.inf])
    floors = torch.tensor([6.0, 6.0]).view(-1, 1, 1, 1)
    ref = reduce_stacked(torch.stack(xs), floors, below, Thresholds())
    got = reduce_fused(xs, floors, below, Thresholds())
    assert ref[1][3].tolist() == got[1][3].tolist() == [0, 2]          # channels whose max is not finite
    ok = torch.isfinite(ref[0][0])                                     # elsewhere the same maxima
    assert torch.equal(ref[0][0][ok], got[0][0][ok]) and torch.equal(ref[0][6][ok], got[0][6][ok])


def test_strided_site_tensor(kernel):
    """A view that is not contiguous (OPT-like layouts, slices) is read in place with its strides."""
    base = _sites(1, 2, 80, 260, torch.float32, seed=3)[0]
    xs = [base[:, 5:75, :], base[:, :70, 3:260:2]]
    xs[1] = xs[1][:, :, :128]
    xs[0] = xs[0][:, :, :128]
    assert not xs[0].is_contiguous() and not xs[1].is_contiguous()
    _compare(xs, torch.tensor([6.0, 6.0]).view(-1, 1, 1, 1))


def test_one_launch_for_all_sites_equals_one_per_site(monkeypatch):
    """split: same-shaped sites go out in one launch per kernel (the site on a program axis), with the same
    outputs as one launch per site; sites of other strides, or at offsets that are not 16-byte multiples, fall back."""
    R.use("split", *KERNELS["split"])
    try:
        xs = _sites(3, 2, 37, 129, torch.bfloat16, seed=7)
        floors = torch.tensor([6.0, 100.0, 6.0]).view(-1, 1, 1, 1)
        below = torch.tensor([-math.inf])
        groups = []
        real = R.launch_group
        spy = lambda *a, **k: groups.append(len(a[0])) or real(*a, **k)      # noqa: E731
        monkeypatch.setattr(R, "launch_group", spy)
        grouped = reduce_fused(xs, floors, below, Thresholds())
        assert groups == [3]
        monkeypatch.setattr(R, "group_offsets", lambda xs: None)
        alone = reduce_fused(xs, floors, below, Thresholds())
        assert groups == [3]
        for g, a in zip([*grouped[0], *grouped[1]], [*alone[0], *alone[1]]):
            assert torch.equal(g, a)
        monkeypatch.undo()
        monkeypatch.setattr(R, "launch_group", spy)
        base = torch.cat([xs[0].flatten(), torch.zeros(1, dtype=torch.bfloat16), xs[1].flatten()])
        n = xs[0].numel()
        odd = [base[:n].view(2, 37, 129), base[n + 1:].view(2, 37, 129)]          # 19,094 bytes apart
        assert (odd[1].data_ptr() - odd[0].data_ptr()) % 16 != 0
        assert R.group_offsets(odd) is None and R.group_offsets(xs) is not None
        _compare(odd, floors[:2])                                                  # one launch per site
        assert groups == [3]
        assert R.group_offsets([xs[0], xs[1][:, :, :100]]) is None                # another shape
    finally:
        R.use(R.DEFAULT)


def _tolerant(a, b, path=""):
    """Reports equal to the last digit, except the fields made of float32 sums (mean |x|) within a few ulps."""
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            _tolerant(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _tolerant(x, y, f"{path}[{i}]")
    elif "channel_absmean" in path or path.endswith("mean_abs"):
        assert a == pytest.approx(b, rel=2e-5), path
    else:
        assert a == b or (a != a and b != b), (path, a, b)


def test_detect_report_with_the_fused_reduction(monkeypatch):
    """A whole detect in the accelerator's forms (dense, host work at the flush) on a tiny planted model: the
    fused reduction gives the torch form's report."""
    from capture_v1 import V1Recorder  # noqa: F401  (tests/ on the path)
    from test_detect import ids, planted
    model = planted()
    x, kw = ids(n=3, T=16), {"attention_windows": 2, "batch_size": 2}     # a chunk with attention, one without
    monkeypatch.setattr(capture.Recorder, "dense", True)
    monkeypatch.setattr(capture.Pending, "defer", True)
    reports, calls = {}, []
    real = capture.reduce_fused
    monkeypatch.setattr(capture, "reduce_fused", lambda *a: calls.append(1) or real(*a))
    for form in ("torch", "triton"):
        monkeypatch.setenv("SYSQ_REDUCE", form)
        r = detect(model, x, quiet=True, pipeline="memory", **kw)
        d = r.to_dict()
        d.pop("cost")
        reports[form] = json.loads(json.dumps(d))
    assert calls                                         # the fused pass ran (and only in the second detect)
    assert reports["torch"]["lifecycle"] and reports["torch"]["attention"]["layers"]
    _tolerant(reports["triton"], reports["torch"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_weight_statistics_fused_equal_the_stacked_form(kernel, monkeypatch, dtype):
    """detect's weight statistics (column ratios, top columns, the row of each column's max) by the fused pass, each
    weight read in place, equal the stacked torch form's to the last bit (ties of a column's max: the first row)."""
    from sysq.detect.weight import _on_device
    g = torch.Generator().manual_seed(5)
    ws = [torch.randn(150, 70, generator=g) * 0.02 for _ in range(3)]
    ws[0][[3, 140], 5] = 0.5                        # a tie across token programs: row 3
    ws[1][[20, 21], 9] = -0.5                       # inside a tile: row 20
    ws[2][:, 11] = 0.0                              # a zero column (ratio 0 / floor)
    ws = [w.to(dtype) for w in ws]
    monkeypatch.setenv("SYSQ_REDUCE", "torch")
    ref = _on_device(ws)
    monkeypatch.setenv("SYSQ_REDUCE", "triton")
    got = _on_device(ws)
    for r, g_ in zip(ref, got):
        assert r.dtype == g_.dtype and torch.equal(r, g_)
    assert ref[-1][0, 5] == 3 and ref[-1][1, 9] == 20
    j = ref[2][0].tolist().index(5)                 # column 5's largest rows: the tie in row order
    assert ref[3][0, j, :2].tolist() == [3, 140] and ref[4][0, j, :2].tolist() == [0.5, 0.5]


def test_column_sums_of_attention_probabilities(kernel):
    """The attention mass each key receives ([B * H, Tq, T] summed over the queries) in float64 by the fused pass:
    the same float32 digits as torch's float64 sum."""
    g = torch.Generator().manual_seed(6)
    w = torch.randn(2, 3, 40, 40, generator=g).tril().softmax(-1).to(torch.bfloat16)
    m, j, total = capture.column_stats([w.view(6, 40, 40)])
    ref = w.sum(2, dtype=torch.float64).view(6, 40)
    assert total.dtype == torch.float64 and torch.equal(total[0].float(), ref.float())
    assert torch.equal(capture.column_stats([w.view(6, 40, 40)], maxima=False)[2], total)
    mx, first = w.view(6, 40, 40).max(1)                      # and each key's largest probability, first query
    assert torch.equal(m[0], mx) and torch.equal(j[0], first)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fused_qkv", [False, True])
def test_qkv_norms_by_the_kernel_equal_torch_float64(dtype, fused_qkv):
    """The per-token mean head norms of q, k and v (capture's _qkv_norms on a GPU) by one Triton launch per layer equal
    torch's float64 vector_norm + mean to the last bit: grouped-query heads, a head size that is not a power of two,
    rows that do not fill the last block, views of one fused qkv output."""
    from sysq._norms_triton import BLOCK_R, qkv_norms_into
    g = torch.Generator().manual_seed(7)
    B, T, D, HQ, HKV = 3, BLOCK_R + 5, 48, 4, 2
    if fused_qkv:
        qkv = torch.randn(B, T, (HQ + 2 * HKV) * D, generator=g).to(dtype)
        qkv[0, 0, :D] *= 300.0                              # one large head: the rows' magnitudes differ widely
        q, k, v = qkv.split([HQ * D, HKV * D, HKV * D], -1)
    else:
        q, k, v = (torch.randn(B, T, h * D, generator=g).to(dtype) for h in (HQ, HKV, HKV))
    out = torch.full((B, T, 3), float("nan"))
    qkv_norms_into(q, k, v, D, out)
    ref = torch.stack([torch.linalg.vector_norm(p.reshape(B, T, -1, D), dim=-1, dtype=torch.float64).mean(-1).float()
                       for p in (q, k, v)], -1)
    assert torch.equal(out, ref)
    with pytest.raises(ValueError, match="contiguous float32"):
        qkv_norms_into(q, k, v, D, out[..., :2])
