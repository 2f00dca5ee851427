"""The Triton kernel behind sysq.attention (imported on first use: Triton is optional).

Decode attention, one query token per sequence, grouped-query attention read in place: a program takes one
(sequence, KV head, slice of the keys) and the G query heads that share that KV head, so the cache is read
once and never expanded to the query heads (transformers' repeat_kv copies the whole static cache every
layer). Q, K and V are read as float32 (bf16 values are exact in TF32, which the products use on the GPU for
16-bit models; float32 models take IEEE products), scores and the softmax are float32 with an online maximum
(flash attention). With one slice (SPLIT == 1) the program normalises and
stores the output in the input's dtype; with more, each stores its float32 (max, sum, unnormalised output),
counts itself in on its (sequence, KV head)'s int32 counter, and the last of the SPLIT to arrive merges the
slices and stores the output, then zeroes the counter (flash-decoding, its combine in the same launch).
"""
from __future__ import annotations

import functools

import triton
import triton.language as tl

from .quant._gemv_triton import _to_bf16_rtne


def _decode_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, out_ptr, part_ptr, m_ptr, l_ptr, cnt_ptr,
                   L, BH, scale,
                   sq_b, sq_h, sk_b, sk_h, sk_l, sv_b, sv_h, sv_l, sm_b, sm_l, so_s, so_b, so_h,
                   HKV: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, DP: tl.constexpr,
                   BLOCK_L: tl.constexpr, SPLIT: tl.constexpr, HAS_MASK: tl.constexpr, PRECISION: tl.constexpr):
    # q [B, H, D] (H = HKV * G; head h reads KV head h // G); k, v [B, HKV, L, D]; mask bool [B, L] (True: attend);
    # out [B, H, D] in q's dtype (strides so_b, so_h). SPLIT > 1: float32 partials part [SPLIT, B, H, D] (strides
    # so_s, so_b, so_h) and m, l [SPLIT, B, H] (BH = B * H), and int32 arrival counters cnt [B * HKV], zero on entry
    # and left zero
    pid_bh = tl.program_id(0)
    pid_s = tl.program_id(1)
    b = pid_bh // HKV
    hk = pid_bh % HKV
    rg = tl.arange(0, GP)                 # query heads of this KV head (padded to GP >= 16 for tl.dot)
    rd = tl.arange(0, DP)
    g_mask = rg < G
    d_mask = rd < D
    q = tl.load(q_ptr + b * sq_b + (hk * G + rg[:, None]) * sq_h + rd[None, :],
                mask=g_mask[:, None] & d_mask[None, :], other=0).to(tl.float32)
    per_split = tl.cdiv(tl.cdiv(L, BLOCK_L), SPLIT) * BLOCK_L
    start = pid_s * per_split
    m_i = tl.full([GP], float("-inf"), tl.float32)
    l_i = tl.zeros([GP], tl.float32)
    acc = tl.zeros([GP, DP], tl.float32)
    for l0 in range(start, start + per_split, BLOCK_L):
        rl = l0 + tl.arange(0, BLOCK_L)
        l_ok = rl < L
        if HAS_MASK:
            l_ok = l_ok & (tl.load(mask_ptr + b * sm_b + rl * sm_l, mask=l_ok, other=0) != 0)
        kv_mask = l_ok[:, None] & d_mask[None, :]
        k = tl.load(k_ptr + b * sk_b + hk * sk_h + rl[:, None] * sk_l + rd[None, :], mask=kv_mask,
                    other=0).to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale     # [GP, BLOCK_L]
        s = tl.where(l_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)                  # no key yet: keep zeros
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_ptr + b * sv_b + hk * sv_h + rl[:, None] * sv_l + rd[None, :], mask=kv_mask,
                    other=0).to(tl.float32)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=PRECISION)
        m_i = m_new
    rows = b * so_b + (hk * G + rg) * so_h
    if SPLIT == 1:
        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]     # a row with no key attended gives zeros
        if out_ptr.dtype.element_ty == tl.bfloat16:
            out = _to_bf16_rtne(out)
        tl.store(out_ptr + rows[:, None] + rd[None, :], out.to(out_ptr.dtype.element_ty),
                 mask=g_mask[:, None] & d_mask[None, :])
    else:
        out_mask = g_mask[:, None] & d_mask[None, :]
        stat = b * (HKV * G) + hk * G + rg
        tl.store(part_ptr + pid_s * so_s + rows[:, None] + rd[None, :], acc, mask=out_mask)
        tl.store(m_ptr + pid_s * BH + stat, m_i, mask=g_mask)
        tl.store(l_ptr + pid_s * BH + stat, l_i, mask=g_mask)
        # the last slice of this (sequence, KV head) to arrive merges all SPLIT (flash-decoding's combine): every
        # thread's stores above precede the release of the count (barrier, then acq_rel), and its loads below
        # follow the acquire
        tl.debug_barrier()
        arrived = tl.atomic_add(cnt_ptr + pid_bh, 1, sem="acq_rel", scope="gpu")
        if arrived == SPLIT - 1:
            top = tl.full([GP], -3e38, tl.float32)
            for i in range(SPLIT):
                top = tl.maximum(top, tl.load(m_ptr + i * BH + stat, mask=g_mask, other=float("-inf"),
                                              cache_modifier=".cg"))
            total = tl.zeros([GP], tl.float32)
            y = tl.zeros([GP, DP], tl.float32)
            for i in range(SPLIT):      # slice i weighted by exp(m_i - max m) over the exp-sums so weighted
                m_s = tl.load(m_ptr + i * BH + stat, mask=g_mask, other=float("-inf"), cache_modifier=".cg")
                w = tl.where(m_s == float("-inf"), 0.0, tl.exp(m_s - top))     # an empty slice weighs nothing
                total += tl.load(l_ptr + i * BH + stat, mask=g_mask, other=0.0, cache_modifier=".cg") * w
                y += tl.load(part_ptr + i * so_s + rows[:, None] + rd[None, :], mask=out_mask, other=0.0,
                             cache_modifier=".cg") * w[:, None]
            y = y / tl.where(total == 0.0, 1.0, total)[:, None]       # a row with no key attended gives zeros
            if out_ptr.dtype.element_ty == tl.bfloat16:
                y = _to_bf16_rtne(y)
            tl.store(out_ptr + rows[:, None] + rd[None, :], y.to(out_ptr.dtype.element_ty), mask=out_mask)
            tl.store(cnt_ptr + pid_bh, 0)       # zero again for the next call (and the next CUDA-graph replay)


@functools.lru_cache(maxsize=None)
def kernel():
    """The jitted kernel. Under TRITON_INTERPRET=1 (set before triton is first imported) it runs on the CPU."""
    return triton.jit(_decode_kernel)
