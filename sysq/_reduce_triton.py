"""The fused Triton pass behind sysq.capture.reduce_fused (imported on first use: Triton is optional).

One program reads one [BLOCK_T, BLOCK_C] tile of one window of a site tensor [B, T, C] in place (any strides, any
float dtype) once and writes partials of both reductions: per channel over the tile's tokens (max |x|, the first
token holding it, the signed value there, float32 sum |x|, the count of |x| > the window's massive threshold) and
per token over the tile's channels (max |x|, the first channel holding it, the signed value there). The caller
reduces the partials over token blocks / channel blocks (a few small torch ops, first block on ties, as torch's
max(dim) picks the first index), so the first token / channel wins overall, as in reduce_stacked.

Comparisons run in float32 (exact for bf16 / fp16 / fp32 inputs); maxima are stored back in x's dtype (exact).
A NaN counts as +inf in the maxima, so a non-finite value shows as a non-finite maximum (the caller's flag) where
torch's max would give NaN.
"""
from __future__ import annotations

import functools

import triton
import triton.language as tl

BLOCK_T = 64
BLOCK_C = 128
NUM_WARPS = 8


@triton.jit
def _site_reduce_kernel(x_ptr, thr_ptr, T, C, s_b, s_t, s_c, NTB, NCB,
                        cmax_ptr, cidx_ptr, cval_ptr, csum_ptr, ccnt_ptr,    # [B, NTB, C] per-channel partials
                        tmax_ptr, targ_ptr, tval_ptr,                        # [B, T, NCB] per-token partials
                        BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    pc = tl.program_id(1)
    b = pid // NTB
    tb = pid % NTB
    rt = tb * BLOCK_T + tl.arange(0, BLOCK_T)
    rc = pc * BLOCK_C + tl.arange(0, BLOCK_C)
    mt = rt < T
    mc = rc < C
    m = mt[:, None] & mc[None, :]
    x = tl.load(x_ptr + b.to(tl.int64) * s_b + rt[:, None].to(tl.int64) * s_t + rc[None, :].to(tl.int64) * s_c,
                mask=m, other=0.0).to(tl.float32)
    ax = tl.abs(x)
    key = tl.where(m, tl.where(ax == ax, ax, float("inf")), -1.0)      # outside the tensor: below any |x|
    big = 2147483647
    neg = float("-inf")
    # per channel, over the tile's tokens
    cm = tl.max(key, axis=0)
    ct = tl.min(tl.where(key == cm[None, :], rt[:, None], big), axis=0)             # the first token
    cv = tl.max(tl.where(rt[:, None] == ct[None, :], x, neg), axis=0)               # its signed value (-0.0 kept)
    cs = tl.sum(tl.where(m, ax, 0.0), axis=0)
    thr = tl.load(thr_ptr + b)
    cn = tl.sum((m & (ax > thr)).to(tl.int32), axis=0)
    co = (b * NTB + tb) * C + rc
    tl.store(cmax_ptr + co, cm.to(cmax_ptr.dtype.element_ty), mask=mc)
    tl.store(cidx_ptr + co, ct, mask=mc)
    tl.store(cval_ptr + co, cv.to(cval_ptr.dtype.element_ty), mask=mc)
    tl.store(csum_ptr + co, cs, mask=mc)
    tl.store(ccnt_ptr + co, cn, mask=mc)
    # per token, over the tile's channels
    tm = tl.max(key, axis=1)
    tc = tl.min(tl.where(key == tm[:, None], rc[None, :], big), axis=1)             # the first channel
    tv = tl.max(tl.where(rc[None, :] == tc[:, None], x, neg), axis=1)
    to = (b * T + rt) * NCB + pc
    tl.store(tmax_ptr + to, tm.to(tmax_ptr.dtype.element_ty), mask=mt)
    tl.store(targ_ptr + to, tc, mask=mt)
    tl.store(tval_ptr + to, tv.to(tval_ptr.dtype.element_ty), mask=mt)


@functools.lru_cache(maxsize=None)
def kernel():
    return _site_reduce_kernel


def launch(x, thr, parts: tuple, ntb: int, ncb: int) -> None:
    """One site [B, T, C]: thr [B] float32 (contiguous); parts: this site's slices of the partial buffers
    (cmax, cidx, cval, csum, ccnt: [B, ntb, C]; tmax, targ, tval: [B, T, ncb]), contiguous."""
    B, T, C = x.shape
    kernel()[(B * ntb, ncb)](x, thr, T, C, *x.stride(), ntb, ncb, *parts, BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C,
                             num_warps=NUM_WARPS)
