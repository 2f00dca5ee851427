"""The Triton kernel behind sysq.attention (imported on first use: Triton is optional).

Decode attention, one query token per sequence, grouped-query attention read in place: a program takes one
(sequence, KV head, slice of the keys) and the G query heads that share that KV head, so the cache is read
once and never expanded to the query heads (transformers' repeat_kv copies the whole static cache every
layer). Q, K and V are read as float32 (bf16 values are exact in TF32, which the products use on the GPU for
16-bit models; float32 models take IEEE products), scores and the softmax are float32 with an online maximum
(flash attention). With one slice (SPLIT == 1) the program normalises and
stores the output in the input's dtype; with more, it stores (max, sum, unnormalised output) and a second
kernel combines them (flash-decoding).
"""
from __future__ import annotations

import functools

import triton
import triton.language as tl

from .quant._gemv_triton import _to_bf16_rtne


def _decode_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, out_ptr, m_ptr, l_ptr,
                   L, BH, scale,
                   sq_b, sq_h, sk_b, sk_h, sk_l, sv_b, sv_h, sv_l, sm_b, sm_l, so_s, so_b, so_h,
                   HKV: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, DP: tl.constexpr,
                   BLOCK_L: tl.constexpr, SPLIT: tl.constexpr, HAS_MASK: tl.constexpr, PRECISION: tl.constexpr):
    # q [B, H, D] (H = HKV * G; head h reads KV head h // G); k, v [B, HKV, L, D]; mask bool [B, L] (True: attend);
    # out [B, H, D] in q's dtype (SPLIT 1) or float32 [SPLIT, B, H, D] with m, l float32 [SPLIT, B, H] (BH = B * H)
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
        tl.store(out_ptr + pid_s * so_s + rows[:, None] + rd[None, :], acc, mask=g_mask[:, None] & d_mask[None, :])
        stat = pid_s * BH + b * (HKV * G) + hk * G + rg
        tl.store(m_ptr + stat, m_i, mask=g_mask)
        tl.store(l_ptr + stat, l_i, mask=g_mask)


def _combine_kernel(part_ptr, m_ptr, l_ptr, out_ptr, BH, S: tl.constexpr, SP: tl.constexpr, D: tl.constexpr,
                    DP: tl.constexpr):
    # one program per (sequence, query head): the S slices' unnormalised outputs part [S, BH, D] weighted by
    # exp(m_s - max m) over the exp-sums l [S, BH] so weighted (flash-decoding's combine); out [BH, D] in its dtype
    bh = tl.program_id(0)
    rs = tl.arange(0, SP)
    rd = tl.arange(0, DP)
    s_ok = rs < S
    m = tl.load(m_ptr + rs * BH + bh, mask=s_ok, other=float("-inf"))
    l_ = tl.load(l_ptr + rs * BH + bh, mask=s_ok, other=0.0)
    top = tl.maximum(tl.max(m, axis=0), -3e38)
    w = tl.where(m == float("-inf"), 0.0, tl.exp(m - top))                    # an empty slice weighs nothing
    total = tl.sum(l_ * w, axis=0)
    p = tl.load(part_ptr + (rs[:, None] * BH + bh) * D + rd[None, :], mask=s_ok[:, None] & (rd[None, :] < D),
                other=0.0)
    y = tl.sum(p * w[:, None], axis=0) / tl.where(total == 0.0, 1.0, total)  # no key attended: zeros
    if out_ptr.dtype.element_ty == tl.bfloat16:
        y = _to_bf16_rtne(y)
    tl.store(out_ptr + bh * D + rd, y.to(out_ptr.dtype.element_ty), mask=rd < D)


@functools.lru_cache(maxsize=None)
def combine_kernel():
    return triton.jit(_combine_kernel)


@functools.lru_cache(maxsize=None)
def kernel():
    """The jitted kernel. Under TRITON_INTERPRET=1 (set before triton is first imported) it runs on the CPU."""
    return triton.jit(_decode_kernel)
