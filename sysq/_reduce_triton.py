"""The fused Triton pass behind sysq.capture.reduce_fused (imported on first use: Triton is optional).

One program reads TOKENS tokens x BLOCK_C channels of one window of a site tensor [B, T, C] in place (any strides,
any float dtype) once, BLOCK_T tokens at a time, and writes partials of both reductions: per channel over its tokens
(max |x|, the first token holding it, the signed value there, float64 sum |x|, the count of |x| > the window's
massive threshold) and per token over its channels (max |x|, the first channel holding it, the signed value there).
The caller reduces the partials over token programs / channel blocks (a few small torch ops, first block on ties,
as torch's max(dim) picks the first index), so the first token / channel wins overall, as in reduce_stacked.

Why it runs at memory speed: the per-channel statistics accumulate element-wise across the program's tiles (a
strictly larger |x| replaces the kept one, so the earliest token stays on ties) and are reduced across threads
once per program, not once per tile; the per-token statistics are one max per tile of a packed 64-bit key
(|x|'s float32 bits above 2^31 - 1 - channel and x's sign bit), so the max, the first channel and the sign come
from one reduction along the channels, inside a warp.

Comparisons run in float32 (exact for bf16 / fp16 / fp32 inputs); maxima are stored back in x's dtype (exact).
A NaN counts as +inf in the maxima, so a non-finite value shows as a non-finite maximum (the caller's flag) where
torch's max would give NaN.
"""
from __future__ import annotations

import functools
import os

import triton
import triton.language as tl

BLOCK_T = 16            # tokens per tile
TOKENS = 64             # tokens per program (TOKENS / BLOCK_T tiles)
BLOCK_C = 128           # channels per program
NUM_WARPS = 4
if os.environ.get("SYSQ_REDUCE_TILE"):      # "BLOCK_T,TOKENS,BLOCK_C,NUM_WARPS": scripts/bench_reduce.py's sweep
    BLOCK_T, TOKENS, BLOCK_C, NUM_WARPS = (int(v) for v in os.environ["SYSQ_REDUCE_TILE"].split(","))


@triton.jit
def _site_reduce_kernel(x_ptr, thr_ptr, T, C, s_b, s_t, s_c, NTB, NCB,
                        cmax_ptr, cidx_ptr, cval_ptr, csum_ptr, ccnt_ptr,    # [B, NTB, C] per-channel partials
                        tmax_ptr, targ_ptr, tval_ptr,                        # [B, T, NCB] per-token partials
                        BLOCK_T: tl.constexpr, TOKENS: tl.constexpr, BLOCK_C: tl.constexpr,
                        TOKEN_STATS: tl.constexpr):
    pid = tl.program_id(0)
    pc = tl.program_id(1)
    b = pid // NTB
    tb = pid % NTB
    big = 2147483647
    rc = pc * BLOCK_C + tl.arange(0, BLOCK_C)
    mc = rc < C
    thr = tl.load(thr_ptr + b)
    base = x_ptr + b.to(tl.int64) * s_b + rc[None, :].to(tl.int64) * s_c
    # the packed per-token key's low half: 2^31 - 1 - channel (the first channel wins ties), shifted for the sign
    clow = (big - rc).to(tl.int64) * 2
    # element-wise per-channel accumulators: rows hold distinct tokens, so ties across rows go to the smaller token
    acc_key = tl.full((BLOCK_T, BLOCK_C), -1.0, tl.float32)
    acc_tok = tl.full((BLOCK_T, BLOCK_C), big, tl.int32)
    acc_val = tl.zeros((BLOCK_T, BLOCK_C), tl.float32)
    acc_sum = tl.zeros((BLOCK_T, BLOCK_C), tl.float64)      # float64: any order gives the report's digits
    acc_cnt = tl.zeros((BLOCK_T, BLOCK_C), tl.int32)
    for k in tl.static_range(0, TOKENS, BLOCK_T):
        rt = tb * TOKENS + k + tl.arange(0, BLOCK_T)
        mt = rt < T
        m = mt[:, None] & mc[None, :]
        x = tl.load(base + rt[:, None].to(tl.int64) * s_t, mask=m, other=0.0).to(tl.float32)
        ax = tl.abs(x)
        key = tl.where(m, tl.where(ax == ax, ax, float("inf")), -1.0)      # outside the tensor: below any |x|
        better = key > acc_key                         # strictly: the earlier token stays on ties
        acc_key = tl.where(better, key, acc_key)
        acc_tok = tl.where(better, rt[:, None], acc_tok)
        acc_val = tl.where(better, x, acc_val)
        acc_sum += tl.where(m, ax, 0.0).to(tl.float64)
        acc_cnt += (m & (ax > thr)).to(tl.int32)
        # per token over the program's channels: one max of (|x| bits, 2^31 - 1 - channel, sign)
        if TOKEN_STATS:
            sign = (x.to(tl.int32, bitcast=True) >> 31) & 1
            packed = (key.to(tl.int32, bitcast=True).to(tl.int64) << 32) | (clow[None, :] | sign.to(tl.int64))
            best = tl.max(packed, axis=1)
            tm = (best >> 32).to(tl.int32).to(tl.float32, bitcast=True)
            low = best & 0xFFFFFFFF
            tc = (big - (low >> 1)).to(tl.int32)
            tv = tl.where((low & 1) == 1, -tm, tm)
            to = (b * T + rt) * NCB + pc
            tl.store(tmax_ptr + to, tm.to(tmax_ptr.dtype.element_ty), mask=mt)
            tl.store(targ_ptr + to, tc, mask=mt)
            tl.store(tval_ptr + to, tv.to(tval_ptr.dtype.element_ty), mask=mt)
    # per channel over the program's tokens: once
    cm = tl.max(acc_key, axis=0)
    at = (acc_key == cm[None, :]) & (acc_tok < big)
    ct = tl.min(tl.where(at, acc_tok, big), axis=0)                            # the first token
    cv = tl.max(tl.where(at & (acc_tok == ct[None, :]), acc_val, float("-inf")), axis=0)   # its value (-0.0 kept)
    cs = tl.sum(acc_sum, axis=0)
    cn = tl.sum(acc_cnt, axis=0)
    co = (b * NTB + tb) * C + rc
    tl.store(cmax_ptr + co, cm.to(cmax_ptr.dtype.element_ty), mask=mc)
    tl.store(cidx_ptr + co, ct, mask=mc)
    tl.store(cval_ptr + co, cv.to(cval_ptr.dtype.element_ty), mask=mc)
    tl.store(csum_ptr + co, cs, mask=mc)
    tl.store(ccnt_ptr + co, cn, mask=mc)


@functools.lru_cache(maxsize=None)
def kernel():
    return _site_reduce_kernel


def token_programs(T: int) -> int:
    """Programs along the tokens of a window (the per-channel partials' second dimension)."""
    return -(-T // TOKENS)


def channel_blocks(C: int) -> int:
    """Programs along the channels (the per-token partials' last dimension)."""
    return -(-C // BLOCK_C)


def launch(x, thr, parts: tuple, ntb: int, ncb: int) -> None:
    """One site [B, T, C]: thr [B] float32 (contiguous); parts: this site's slices of the partial buffers
    (cmax, cidx, cval, csum, ccnt: [B, ntb, C]; tmax, targ, tval: [B, T, ncb], or None for the per-channel
    statistics only), contiguous."""
    B, T, C = x.shape
    stats = parts[5] is not None
    parts = parts if stats else parts[:5] + (parts[0],) * 3        # not written
    kernel()[(B * ntb, ncb)](x, thr, T, C, *x.stride(), ntb, ncb, *parts, BLOCK_T=BLOCK_T, TOKENS=TOKENS,
                             BLOCK_C=BLOCK_C, TOKEN_STATS=stats, num_warps=NUM_WARPS)
