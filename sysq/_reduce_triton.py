"""The fused Triton pass behind sysq.capture.reduce_fused (imported on first use: Triton is optional).

One program reads TOKENS tokens x BLOCK_C channels of one window of a site tensor [B, T, C] in place (any strides,
any float dtype) once, BLOCK_T tokens at a time, and writes partials of both reductions: per channel over its tokens
(max |x|, the first token holding it, the signed value there, float64 sum |x|, the count of |x| > the window's
massive threshold) and per token over its channels (max |x|, the first channel holding it, the signed value there).
The caller reduces the partials over token programs / channel blocks (a few small torch ops, first block on ties,
as torch's max(dim) picks the first index), so the first token / channel wins overall, as in reduce_stacked.

The fused design (measured ~200 GB/s on one H200, a tenth of a plain read; 240 registers compiled for sm_90): the
per-channel statistics accumulate element-wise across the program's tiles (a
strictly larger |x| replaces the kept one, so the earliest token stays on ties) and are reduced across threads
once per program, not once per tile; the per-token statistics are one max per tile of a packed 64-bit key
(|x|'s float32 bits above 2^31 - 1 - channel and x's sign bit), so the max, the first channel and the sign come
from one reduction along the channels, inside a warp.

Comparisons run in float32 (exact for bf16 / fp16 / fp32 inputs); maxima are stored back in x's dtype (exact).
A NaN counts as +inf in the maxima, so a non-finite value shows as a non-finite maximum (the caller's flag) where
torch's max would give NaN.

Kernel designs (SYSQ_REDUCE_KERNEL, read once here; docs/DETECT_FUSED.md, "Eighth session"), the same outputs:
  fused  _site_reduce_kernel: both reductions in one pass of short programs (64 tokens x 128 channels), per-channel
         statistics element-wise in registers, per-token stats by one packed int64 max per tile;
  split  two lighter passes, the site read twice: _site_reduce_channel_kernel (per channel over a long token range,
         wide channel blocks, the per-tile maxima reduced along the tokens inside each thread, 1D accumulators; the
         signed value loaded once at the end) and _site_reduce_token_kernel (per token over ALL channels, two
         element-wise 32-bit accumulators, final values: no per-token partials to combine). The default: at the 8B
         shape on an H200 its passes take 1.21 ms a layer of 8 x 512 tokens against fused's 1.69, and detect 0.39 s
         against 0.43-0.48 (calls E8, B9; docs/DETECT_FUSED.md, "Ninth session");
  wide   one pass: the channel kernel with the per-token partials of its wide channel block (two 32-bit reductions
         per tile, the signed value loaded back from the tile just read).
The per-column passes (weights, attention mass: no token statistics) take the channel kernel under split and wide.
"""
from __future__ import annotations

import functools
import os

import triton
import triton.language as tl

VARIANTS = ("fused", "split", "wide")
# per variant: BLOCK_T (tokens per tile), TOKENS (per program), BLOCK_C (channels per program), NUM_WARPS, ROWWISE
# (split / wide: reduce each tile along its tokens at once into 1D accumulators, else element-wise 2D ones; with
# BLOCK_C = 8 x 32 x NUM_WARPS a bf16 tile's tokens all sit in each thread, so that reduction is in registers),
# PREFETCH (split / wide: load the next step's tile before reducing this one; Triton does not pipeline these loops)
TILES = {"fused": (16, 64, 128, 4, 0, 0), "split": (4, 32, 1024, 4, 1, 1), "wide": (4, 32, 1024, 4, 1, 1)}
TOKEN_TILES = (4, 512, 4)       # split's per-token kernel: BLOCK_T, BLOCK_C (its loop step), NUM_WARPS
DEFAULT = "split"               # what SYSQ_REDUCE_KERNEL unset picks (see the docstring)
STAGES = 3                      # num_stages of the split / wide launches (Triton's default; the loops may pipeline)


def use(variant: str, tile=None, token_tile=None) -> None:
    """Select the kernel design and its tiles (module state: read at each launch; bench_reduce and tests)."""
    global VARIANT, BLOCK_T, TOKENS, BLOCK_C, NUM_WARPS, ROWWISE, PREFETCH, TOKEN_TILE
    if variant not in VARIANTS:
        raise ValueError(f"SYSQ_REDUCE_KERNEL={variant!r}: one of {', '.join(VARIANTS)}")
    tile = tuple(tile) if tile else TILES[variant]
    if tile[1] % tile[0]:
        raise ValueError(f"tile {tile}: TOKENS must be a multiple of BLOCK_T")
    VARIANT = variant
    BLOCK_T, TOKENS, BLOCK_C, NUM_WARPS, ROWWISE, PREFETCH = tile + TILES[variant][len(tile):]
    TOKEN_TILE = tuple(token_tile) if token_tile else TOKEN_TILES


def _ints(name: str):
    v = os.environ.get(name)
    return tuple(int(x) for x in v.split(",")) if v else None


# SYSQ_REDUCE_TILE="BLOCK_T,TOKENS,BLOCK_C,NUM_WARPS[,ROWWISE[,PREFETCH]]" (the chosen variant's tile),
# SYSQ_REDUCE_TOKEN_TILE="BLOCK_T,BLOCK_C,NUM_WARPS" (split's token kernel): scripts/bench_reduce.py's sweep
use(os.environ.get("SYSQ_REDUCE_KERNEL", DEFAULT), _ints("SYSQ_REDUCE_TILE"), _ints("SYSQ_REDUCE_TOKEN_TILE"))


@triton.jit
def _program_block(x_ptr, thr_ptr, C, s_b, NTB, BLOCK_C: tl.constexpr):
    """A program's window b, token block tb, channel block pc, channels rc (and their mask), the window's massive
    threshold and its first element: the prologue of the channel-blocked kernels (inlined by Triton)."""
    pid = tl.program_id(0)
    pc = tl.program_id(1)
    b = pid // NTB
    rc = pc * BLOCK_C + tl.arange(0, BLOCK_C)
    return b, pid % NTB, pc, rc, rc < C, tl.load(thr_ptr + b), x_ptr + b.to(tl.int64) * s_b


@triton.jit
def _site_reduce_kernel(x_ptr, thr_ptr, T, C, s_b, s_t, s_c, NTB, NCB,
                        cmax_ptr, cidx_ptr, cval_ptr, csum_ptr, ccnt_ptr,    # [B, NTB, C] per-channel partials
                        tmax_ptr, targ_ptr, tval_ptr,                        # [B, T, NCB] per-token partials
                        BLOCK_T: tl.constexpr, TOKENS: tl.constexpr, BLOCK_C: tl.constexpr,
                        TOKEN_STATS: tl.constexpr):
    b, tb, pc, rc, mc, thr, xb = _program_block(x_ptr, thr_ptr, C, s_b, NTB, BLOCK_C)
    big = 2147483647
    base = xb + rc[None, :].to(tl.int64) * s_c
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


@triton.jit
def _channel_tile(x, ok, rt, thr, rc, row_ptr, s_c, mt, to, tmax_ptr, targ_ptr, tval_ptr,
                  acc_key, acc_tok, acc_sum, acc_cnt,
                  MASKED: tl.constexpr, MAXIMA: tl.constexpr, ROWWISE: tl.constexpr, TOKEN_STATS: tl.constexpr):
    """One [BLOCK_T, BLOCK_C] tile (float32, masked entries loaded as 0.0; ok: the entries inside the tensor, used
    only when MASKED) into the per-channel accumulators; with TOKEN_STATS the tile's per-token partials stored."""
    big = 2147483647
    ax = tl.abs(x)
    if ROWWISE:
        acc_sum += tl.sum(ax.to(tl.float64), axis=0)        # masked entries add 0.0
    else:
        acc_sum += ax.to(tl.float64)
    if MAXIMA:
        key = tl.where(ax == ax, ax, float("inf"))          # a NaN counts as +inf
        over = ax > thr
        if MASKED:
            key = tl.where(ok, key, -1.0)                   # outside the tensor: below any |x|
            over = over & ok
        if ROWWISE:
            # the tile's max per channel and its first token, then strictly larger than the kept one: the earlier
            # token stays on ties (tiles come in token order)
            m = tl.max(key, axis=0)
            first = tl.min(tl.where(key == m[None, :], rt, big), axis=0)
            better = m > acc_key
            acc_key = tl.where(better, m, acc_key)
            acc_tok = tl.where(better, first, acc_tok)
            acc_cnt += tl.sum(over.to(tl.int32), axis=0)
        else:
            better = key > acc_key                          # rows hold distinct tokens: ties go to the smaller one
            acc_key = tl.where(better, key, acc_key)
            acc_tok = tl.where(better, rt, acc_tok)
            acc_cnt += over.to(tl.int32)
        if TOKEN_STATS:
            # per token over the block's channels: the max, its first channel, the signed value loaded back (hot)
            tm = tl.max(key, axis=1)
            tc = tl.min(tl.where(key == tm[:, None], rc[None, :], big), axis=1)
            tv = tl.load(row_ptr + tc.to(tl.int64) * s_c, mask=mt)
            tl.store(tmax_ptr + to, tm.to(tmax_ptr.dtype.element_ty), mask=mt)
            tl.store(targ_ptr + to, tc, mask=mt)
            tl.store(tval_ptr + to, tv, mask=mt)
    return acc_key, acc_tok, acc_sum, acc_cnt


@triton.jit
def _group_site(x_ptr, off_ptr, ALIGN: tl.constexpr, GROUPED: tl.constexpr, AXIS: tl.constexpr):
    """GROUPED: this program's site s (program axis AXIS) and its tensor, x_ptr + the site's element offset from the
    first site's tensor (a multiple of ALIGN elements: 16 bytes, so loads stay vectorised); else site 0, x_ptr."""
    if GROUPED:
        s = tl.program_id(AXIS).to(tl.int64)
        x_ptr = x_ptr + tl.multiple_of(tl.load(off_ptr + s), ALIGN)
    else:
        s = 0
    return s, x_ptr


@triton.jit
def _site_reduce_channel_kernel(x_ptr, thr_ptr, T, C, s_b, s_t, s_c, NTB, NCB,
                                cmax_ptr, cidx_ptr, cval_ptr, csum_ptr, ccnt_ptr,    # [B, NTB, C]
                                tmax_ptr, targ_ptr, tval_ptr,                        # [B, T, NCB] (TOKEN_STATS)
                                off_ptr, SITE_C, SITE_T,
                                BLOCK_T: tl.constexpr, TOKENS: tl.constexpr, BLOCK_C: tl.constexpr,
                                MASK_C: tl.constexpr, ROWWISE: tl.constexpr, MAXIMA: tl.constexpr,
                                TOKEN_STATS: tl.constexpr, PREFETCH: tl.constexpr, GROUPED: tl.constexpr,
                                ALIGN: tl.constexpr):
    """split / wide: TOKENS tokens x BLOCK_C channels of one window per program, BLOCK_T tokens per loop step; the
    full steps load without a token mask (and without a channel mask when C is a multiple of BLOCK_C: MASK_C
    False), the last partial step masked. GROUPED: S sites of one shape and strides in one launch (program axis 2),
    their tensors at off_ptr[s] elements from x_ptr, their partials SITE_C / SITE_T elements apart and their
    thresholds B apart (stacked buffers)."""
    s, x_ptr = _group_site(x_ptr, off_ptr, ALIGN, GROUPED, 2)
    if GROUPED:
        thr_ptr += s * (SITE_C // (NTB * C))
        cmax_ptr += s * SITE_C
        cidx_ptr += s * SITE_C
        cval_ptr += s * SITE_C
        csum_ptr += s * SITE_C
        ccnt_ptr += s * SITE_C
        tmax_ptr += s * SITE_T
        targ_ptr += s * SITE_T
        tval_ptr += s * SITE_T
    b, tb, pc, rc, mc, thr, xb = _program_block(x_ptr, thr_ptr, C, s_b, NTB, BLOCK_C)
    big = 2147483647
    base = xb + rc[None, :].to(tl.int64) * s_c
    if ROWWISE:
        acc_key = tl.full((BLOCK_C,), -1.0, tl.float32)
        acc_tok = tl.full((BLOCK_C,), big, tl.int32)
        acc_sum = tl.zeros((BLOCK_C,), tl.float64)          # float64: any order gives the report's digits
        acc_cnt = tl.zeros((BLOCK_C,), tl.int32)
    else:
        acc_key = tl.full((BLOCK_T, BLOCK_C), -1.0, tl.float32)
        acc_tok = tl.full((BLOCK_T, BLOCK_C), big, tl.int32)
        acc_sum = tl.zeros((BLOCK_T, BLOCK_C), tl.float64)
        acc_cnt = tl.zeros((BLOCK_T, BLOCK_C), tl.int32)
    t0 = tb * TOKENS
    t1 = tl.minimum(t0 + TOKENS, T)
    full = t0 + (t1 - t0) // BLOCK_T * BLOCK_T
    ar = tl.arange(0, BLOCK_T)
    if PREFETCH:        # the next step's tile is loaded before this one is reduced: two tiles in flight per program
        nxt = tl.load(base + (t0 + ar)[:, None].to(tl.int64) * s_t, mask=((t0 + ar) < full)[:, None] & mc[None, :],
                      other=0.0)
    for k in range(t0, full, BLOCK_T):
        rt = k + ar
        rows = xb + rt.to(tl.int64) * s_t
        if PREFETCH:
            x = nxt
            nxt = tl.load(base + (rt + BLOCK_T)[:, None].to(tl.int64) * s_t,
                          mask=((rt + BLOCK_T) < full)[:, None] & mc[None, :], other=0.0)
        elif MASK_C:
            x = tl.load(base + rt[:, None].to(tl.int64) * s_t, mask=mc[None, :], other=0.0)
        else:
            x = tl.load(base + rt[:, None].to(tl.int64) * s_t)
        acc_key, acc_tok, acc_sum, acc_cnt = _channel_tile(
            x.to(tl.float32), mc[None, :], rt[:, None], thr, rc, rows, s_c, rt < T, (b * T + rt) * NCB + pc,
            tmax_ptr, targ_ptr, tval_ptr, acc_key, acc_tok, acc_sum, acc_cnt,
            MASKED=MASK_C, MAXIMA=MAXIMA, ROWWISE=ROWWISE, TOKEN_STATS=TOKEN_STATS)
    if full < t1:
        rt = full + tl.arange(0, BLOCK_T)
        mt = rt < t1
        m = mt[:, None] & mc[None, :]
        x = tl.load(base + rt[:, None].to(tl.int64) * s_t, mask=m, other=0.0)
        acc_key, acc_tok, acc_sum, acc_cnt = _channel_tile(
            x.to(tl.float32), m, rt[:, None], thr, rc, xb + rt.to(tl.int64) * s_t, s_c, mt,
            (b * T + rt) * NCB + pc, tmax_ptr, targ_ptr, tval_ptr, acc_key, acc_tok, acc_sum, acc_cnt,
            MASKED=True, MAXIMA=MAXIMA, ROWWISE=ROWWISE, TOKEN_STATS=TOKEN_STATS)
    co = (b * NTB + tb) * C + rc
    if ROWWISE:
        cs, cm, ct, cn = acc_sum, acc_key, acc_tok, acc_cnt
    else:
        cs = tl.sum(acc_sum, axis=0)
        cm = tl.max(acc_key, axis=0)
        ct = tl.min(tl.where(acc_key == cm[None, :], acc_tok, big), axis=0)     # the first token
        cn = tl.sum(acc_cnt, axis=0)
    tl.store(csum_ptr + co, cs, mask=mc)
    if MAXIMA:
        cv = tl.load(xb + ct.to(tl.int64) * s_t + rc.to(tl.int64) * s_c, mask=mc)  # the signed value (-0.0 kept)
        tl.store(cmax_ptr + co, cm.to(cmax_ptr.dtype.element_ty), mask=mc)
        tl.store(cidx_ptr + co, ct, mask=mc)
        tl.store(cval_ptr + co, cv, mask=mc)
        tl.store(ccnt_ptr + co, cn, mask=mc)


@triton.jit
def _site_reduce_token_kernel(x_ptr, T, C, s_b, s_t, s_c, NTT, tmax_ptr, targ_ptr, tval_ptr,   # [B, T, 1]
                              off_ptr, SITE_T,
                              BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, MASK_T: tl.constexpr,
                              PREFETCH: tl.constexpr, GROUPED: tl.constexpr, ALIGN: tl.constexpr):
    """split: BLOCK_T tokens of one window per program over all C channels, BLOCK_C at a time; element-wise max
    |x| and its channel (strictly larger: the first channel stays, as each column sees channels in order), reduced
    across the channels once; the token's final max, first channel and signed value. GROUPED: as the channel
    kernel's, the site on program axis 1."""
    s, x_ptr = _group_site(x_ptr, off_ptr, ALIGN, GROUPED, 1)
    if GROUPED:
        tmax_ptr += s * SITE_T
        targ_ptr += s * SITE_T
        tval_ptr += s * SITE_T
    pid = tl.program_id(0)
    b = pid // NTT
    big = 2147483647
    rt = (pid % NTT) * BLOCK_T + tl.arange(0, BLOCK_T)
    mt = rt < T
    rows = x_ptr + b.to(tl.int64) * s_b + rt.to(tl.int64) * s_t
    acc_key = tl.full((BLOCK_T, BLOCK_C), -1.0, tl.float32)
    acc_ch = tl.zeros((BLOCK_T, BLOCK_C), tl.int32)
    full = C // BLOCK_C * BLOCK_C
    ar = tl.arange(0, BLOCK_C)
    if PREFETCH:        # as in the channel kernel: the next step's tile in flight while this one is reduced
        nxt = tl.load(rows[:, None] + ar[None, :].to(tl.int64) * s_c, mask=mt[:, None] & (ar < full)[None, :],
                      other=0.0)
    for c0 in range(0, full, BLOCK_C):
        rc = c0 + ar
        if PREFETCH:
            x = nxt
            nxt = tl.load(rows[:, None] + (rc + BLOCK_C)[None, :].to(tl.int64) * s_c,
                          mask=mt[:, None] & ((rc + BLOCK_C) < full)[None, :], other=0.0)
        elif MASK_T:
            x = tl.load(rows[:, None] + rc[None, :].to(tl.int64) * s_c, mask=mt[:, None], other=0.0)
        else:
            x = tl.load(rows[:, None] + rc[None, :].to(tl.int64) * s_c)
        ax = tl.abs(x.to(tl.float32))
        key = tl.where(ax == ax, ax, float("inf"))
        better = key > acc_key
        acc_key = tl.where(better, key, acc_key)
        acc_ch = tl.where(better, rc[None, :], acc_ch)
    if full < C:
        rc = full + tl.arange(0, BLOCK_C)
        m = mt[:, None] & (rc < C)[None, :]
        ax = tl.abs(tl.load(rows[:, None] + rc[None, :].to(tl.int64) * s_c, mask=m, other=0.0).to(tl.float32))
        key = tl.where(m, tl.where(ax == ax, ax, float("inf")), -1.0)
        better = key > acc_key
        acc_key = tl.where(better, key, acc_key)
        acc_ch = tl.where(better, rc[None, :], acc_ch)
    tm = tl.max(acc_key, axis=1)
    tc = tl.min(tl.where(acc_key == tm[:, None], acc_ch, big), axis=1)
    tv = tl.load(rows + tc.to(tl.int64) * s_c, mask=mt)
    to = b * T + rt
    tl.store(tmax_ptr + to, tm.to(tmax_ptr.dtype.element_ty), mask=mt)
    tl.store(targ_ptr + to, tc, mask=mt)
    tl.store(tval_ptr + to, tv, mask=mt)


@functools.lru_cache(maxsize=None)
def kernel():
    return _site_reduce_kernel


def token_programs(T: int) -> int:
    """Programs along the tokens of a window (the per-channel partials' second dimension)."""
    return -(-T // TOKENS)


def _block_c(C: int, x_bytes: int) -> tuple[int, int]:
    """split / wide: the channel block and warps for C channels: BLOCK_C, or the power of two covering C when smaller
    (the attention mass: C = T = 512), with the warps cut so that a ROWWISE tile's tokens stay in each thread
    (a warp spans 32 lanes x one 16-byte vector of channels)."""
    bc = min(BLOCK_C, triton.next_power_of_2(C))
    nw = NUM_WARPS if bc == BLOCK_C or not ROWWISE else max(1, min(NUM_WARPS, bc // (32 * 16 // x_bytes)))
    return bc, nw


def channel_blocks(C: int, x_bytes: int = 2) -> int:
    """The per-token partials' last dimension: channel blocks (split: 1, the token kernel's final values)."""
    if VARIANT == "fused":
        return -(-C // BLOCK_C)
    return 1 if VARIANT == "split" else -(-C // _block_c(C, x_bytes)[0])


def launch(x, thr, parts: tuple, ntb: int, ncb: int, maxima: bool = True) -> None:
    """One site [B, T, C]: thr [B] float32 (contiguous); parts: this site's slices of the partial buffers
    (cmax, cidx, cval, csum, ccnt: [B, ntb, C]; tmax, targ, tval: [B, T, ncb], or None for the per-channel
    statistics only), contiguous. maxima=False: only csum is written (split / wide; fused writes all)."""
    B, T, C = x.shape
    stats = parts[5] is not None
    parts = parts if stats else parts[:5] + (parts[0],) * 3        # not written
    if VARIANT == "fused":
        kernel()[(B * ntb, ncb)](x, thr, T, C, *x.stride(), ntb, ncb, *parts, BLOCK_T=BLOCK_T, TOKENS=TOKENS,
                                 BLOCK_C=BLOCK_C, TOKEN_STATS=stats, num_warps=NUM_WARPS)
        return
    wide = VARIANT == "wide"
    bc, nw = _block_c(C, x.element_size())
    _site_reduce_channel_kernel[(B * ntb, -(-C // bc))](
        x, thr, T, C, *x.stride(), ntb, ncb, *parts, thr, 0, 0, BLOCK_T=BLOCK_T, TOKENS=TOKENS, BLOCK_C=bc,
        MASK_C=C % bc != 0, ROWWISE=bool(ROWWISE), MAXIMA=maxima or stats, TOKEN_STATS=stats and wide,
        PREFETCH=bool(PREFETCH), GROUPED=False, ALIGN=1, num_warps=nw, num_stages=STAGES)
    if stats and not wide:
        bt, bc, nw = TOKEN_TILE
        ntt = -(-T // bt)
        _site_reduce_token_kernel[(B * ntt,)](x, T, C, *x.stride(), ntt, *parts[5:], thr, 0, BLOCK_T=bt, BLOCK_C=bc,
                                              MASK_T=T % bt != 0, PREFETCH=bool(PREFETCH), GROUPED=False, ALIGN=1,
                                              num_warps=nw, num_stages=STAGES)


def group_offsets(xs: list) -> list[int] | None:
    """The element offsets of xs' tensors from the first one's, when one grouped launch can take them all (split;
    one shape, dtype, device and strides; every offset a multiple of 16 bytes); else None."""
    if VARIANT != "split" or len(xs) < 2:
        return None
    x0, e = xs[0], xs[0].element_size()
    if any(x.shape != x0.shape or x.stride() != x0.stride() or x.dtype != x0.dtype or x.device != x0.device
           for x in xs):
        return None
    diffs = [x.data_ptr() - x0.data_ptr() for x in xs]
    return None if any(d % 16 for d in diffs) else [d // e for d in diffs]


def launch_group(xs: list, offsets, thr, col: tuple, tok: tuple, ntb: int, ncb: int, maxima: bool = True) -> None:
    """split: S sites [B, T, C] in one launch per kernel (program axis: the site). offsets: group_offsets(xs) as an
    int64 tensor on the device; thr [S, B], col / tok: the stacked partial buffers [S, ...] (tok None: per-channel
    statistics only)."""
    S, (B, T, C), x = len(xs), xs[0].shape, xs[0]
    stats = tok[0] is not None
    cols = tuple(col) + ((tuple(tok)) if stats else (col[0],) * 3)
    bc, nw = _block_c(C, x.element_size())
    align = 16 // x.element_size()
    _site_reduce_channel_kernel[(B * ntb, -(-C // bc), S)](
        x, thr, T, C, *x.stride(), ntb, ncb, *cols, offsets, B * ntb * C, B * T * ncb, BLOCK_T=BLOCK_T,
        TOKENS=TOKENS, BLOCK_C=bc, MASK_C=C % bc != 0, ROWWISE=bool(ROWWISE), MAXIMA=maxima or stats,
        TOKEN_STATS=False, PREFETCH=bool(PREFETCH), GROUPED=True, ALIGN=align, num_warps=nw, num_stages=STAGES)
    if stats:
        bt, bc, nw = TOKEN_TILE
        ntt = -(-T // bt)
        _site_reduce_token_kernel[(B * ntt, S)](x, T, C, *x.stride(), ntt, *tok, offsets, B * T * ncb, BLOCK_T=bt,
                                                BLOCK_C=bc, MASK_T=T % bt != 0, PREFETCH=bool(PREFETCH),
                                                GROUPED=True, ALIGN=align, num_warps=nw, num_stages=STAGES)
