"""Invariants of the quantizer math, pinned with hypothesis."""
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sysq.errors import SysqError
from sysq.quant.math import (BITS, dequantize_tensor, fake_quantize_tensor, mse_qparams, pack_int4, qparams, qrange,
                             quantize_tensor, rows, unpack_int4)

FAST = settings(max_examples=60, deadline=None)


@st.composite
def matrices(draw, max_rows=6, max_cols=48):
    r = draw(st.integers(1, max_rows))
    c = draw(st.integers(1, max_cols))
    seed = draw(st.integers(0, 2**31 - 1))
    mag = draw(st.sampled_from([1e-3, 1.0, 50.0, 1e4]))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(r, c, generator=g) * mag
    if draw(st.booleans()):   # an outlier column, as in real activations
        x[:, draw(st.integers(0, c - 1))] *= 100
    return x


def _granularity(draw, cols):
    gran = draw(st.sampled_from(["tensor", "channel", "group"]))
    if gran != "group":
        return gran, None
    divisors = [d for d in range(1, cols + 1) if cols % d == 0]
    return gran, draw(st.sampled_from(divisors))


@FAST
@given(x=matrices(), bits=st.sampled_from(BITS), symmetric=st.booleans(), data=st.data())
def test_round_trip_error_within_half_a_step_and_codes_in_range(x, bits, symmetric, data):
    gran, g = _granularity(data.draw, x.shape[1])
    q, scale, zero = quantize_tensor(x, bits, symmetric, gran, g)
    qmin, qmax = qrange(bits)
    assert q.dtype == torch.int8
    assert int(q.min()) >= qmin and int(q.max()) <= qmax
    xhat = dequantize_tensor(q, scale, zero)
    s, _ = qparams(x, bits, symmetric, gran, g)
    step = s.expand(-1, rows(x, gran, g).shape[1]).reshape(x.shape)
    err = (xhat - x).abs()
    assert bool((err <= step / 2 * (1 + 1e-4) + 1e-30).all()), float((err / step).max())
    # the fake-quantize path is the same numbers
    assert torch.allclose(fake_quantize_tensor(x, bits, symmetric, gran, g), xhat, rtol=0, atol=0)


@FAST
@given(bits=st.sampled_from(BITS), symmetric=st.booleans(), r=st.integers(1, 5), c=st.integers(2, 40),
       k=st.integers(-6, 6), seed=st.integers(0, 2**31 - 1))
def test_values_on_the_grid_survive_unchanged(bits, symmetric, r, c, k, seed):
    qmin, qmax = qrange(bits)
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(qmin, qmax + 1, (r, c), generator=g)
    scale = 2.0 ** k   # a power of two keeps every product exact
    if symmetric:
        codes = codes.clamp(-qmax, qmax)
        codes[:, 0] = qmax                      # the row's |max| sets scale = qmax * s / qmax = s exactly
        zero = torch.zeros(r, 1)
    else:
        codes[:, 0], codes[:, 1] = qmin, qmax   # the row's range spans the whole grid
        zero = torch.randint(qmin, qmax + 1, (r, 1), generator=g).float()
    x = (codes.float() - zero) * scale
    q, s, z = quantize_tensor(x, bits, symmetric, "channel")
    assert torch.equal(dequantize_tensor(q, s, z), x)


@FAST
@given(x=matrices(), bits=st.sampled_from(BITS), data=st.data())
def test_float_zero_point_error_within_half_a_step_and_range_ends_exact(x, bits, data):
    gran, g = _granularity(data.draw, x.shape[1])
    x = x + data.draw(st.sampled_from([0.0, 3.0, -7.0])) * x.abs().max()   # ranges that exclude 0 too
    q, scale, zero = quantize_tensor(x, bits, False, gran, g, float_zero=True)
    qmin, qmax = qrange(bits)
    assert q.dtype == torch.int8 and int(q.min()) >= qmin and int(q.max()) <= qmax
    xhat = dequantize_tensor(q, scale, zero, float_zero=True)
    r, rh = rows(x, gran, g), rows(xhat, gran, g)
    step = scale.reshape(-1, 1)
    assert bool(((rh - r).abs() <= step / 2 * (1 + 1e-4) + 1e-6 * r.abs()).all())
    # the group minimum is code qmin and lands on the float zero's grid (Q4_1's d * 0 + m), up to the float
    # rounding of zero + q * scale (relative to the group's magnitude, not to a minimum that may be near 0)
    lo = r.amin(1, keepdim=True)
    err = (rh.gather(1, r.argmin(1, keepdim=True)) - lo).abs()
    assert bool((err <= 1e-6 * r.abs().amax(1, keepdim=True)).all())
    assert torch.equal(fake_quantize_tensor(x, bits, False, gran, g, float_zero=True), xhat)


@FAST
@given(bits=st.sampled_from(BITS), r=st.integers(1, 5), c=st.integers(2, 40), k=st.integers(-6, 6),
       seed=st.integers(0, 2**31 - 1))
def test_a_q4_1_style_grid_with_a_float_minimum_survives_unchanged(bits, r, c, k, seed):
    """d * u + m with u unsigned and m any float (the default model's GGUF blocks): exact, bit for bit."""
    qmin, qmax = qrange(bits)
    g = torch.Generator().manual_seed(seed)
    u = torch.randint(0, qmax - qmin + 1, (r, c), generator=g)
    u[:, 0], u[:, 1] = 0, qmax - qmin                     # the row's range spans the grid
    d = 2.0 ** k
    m = (torch.randn(r, 1, generator=g) * 4 * d).half().float()   # an fp16 minimum, as GGUF stores it
    # the zero point is the grid's value at code 0 (tinygemm's layout): m - qmin * d must be an fp32 number, or the
    # stored grid moves by that sum's rounding (an fp16 m far below 128 d at 8 bits; GGUF's 4-bit blocks fit)
    assume(bool(((m - qmin * d) + qmin * d == m).all()))
    x = u.float() * d + m
    q, s, z = quantize_tensor(x, bits, False, "channel", float_zero=True)
    assert torch.equal(dequantize_tensor(q, s, z, float_zero=True), x)
    assert torch.equal(q.long() - qmin, u)


def test_a_float_zero_point_needs_an_asymmetric_quantizer():
    with pytest.raises(SysqError, match="asymmetric"):
        quantize_tensor(torch.randn(2, 8), 4, True, "channel", float_zero=True)


@FAST
@given(x=matrices(), bits=st.sampled_from(BITS), symmetric=st.booleans(), seed=st.integers(0, 1000), data=st.data())
def test_zero_stays_zero(x, bits, symmetric, seed, data):
    gran, g = _granularity(data.draw, x.shape[1])
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) < 0.3
    x = x.masked_fill(mask, 0.0)
    assert bool((fake_quantize_tensor(x, bits, symmetric, gran, g)[mask] == 0).all())


@given(c=st.integers(2, 300), g=st.integers(2, 256))
@settings(max_examples=40, deadline=None)
def test_ragged_group_gives_a_clear_error(c, g):
    x = torch.randn(3, c)
    if c % g == 0:
        assert quantize_tensor(x, 4, True, "group", g)[1].shape == (3, c // g)
    else:
        with pytest.raises(SysqError, match=f"group_size={g} does not divide"):
            quantize_tensor(x, 4, True, "group", g)


def test_unknown_bits_and_granularity_are_errors():
    with pytest.raises(SysqError, match="allowed: 2, 3, 4, 8"):
        qrange(5)
    with pytest.raises(SysqError, match="allowed: tensor, channel, token, group"):
        rows(torch.zeros(2, 2), "row")


@FAST
@given(r=st.integers(1, 4), c=st.integers(1, 30), seed=st.integers(0, 1000))
def test_int4_packing_round_trips_at_half_the_bytes(r, c, seed):
    q = torch.randint(-8, 8, (r, 2 * c), generator=torch.Generator().manual_seed(seed)).to(torch.int8)
    p = pack_int4(q)
    assert p.dtype == torch.uint8 and p.shape == (r, c)
    assert torch.equal(unpack_int4(p), q)


def test_mse_search_never_worse_than_round_to_nearest():
    x = torch.randn(16, 64)
    x[:, 3] *= 20   # outliers make clipping worth it
    r = rows(x, "channel")
    for bits in (3, 4):
        s0, z0 = qparams(x, bits, False, "channel")
        s1, z1 = mse_qparams(r, bits, False)
        from sysq.quant.math import fake_quantize
        e0 = (fake_quantize(r, s0, z0, bits) - r).abs().pow(2.4).sum(1)
        e1 = (fake_quantize(r, s1, z1, bits) - r).abs().pow(2.4).sum(1)
        assert bool((e1 <= e0 + 1e-6).all()) and float(e1.sum()) < float(e0.sum())


def test_clip_ratio_shrinks_the_scale():
    x = torch.randn(4, 32)
    s1, _ = qparams(x, 8, True, "channel")
    s2, _ = qparams(x, 8, True, "channel", clip_ratio=0.5)
    assert torch.allclose(s2, s1 * 0.5)
