"""The Triton kernels behind sysq.attention_mass (imported on first use: Triton is optional).

The attention mass each key receives, summed over the queries of causal attention, without the [B, H, T, T]
probabilities: two passes over Q K^T, flash-attention style. The first takes each query row's log-sum-exp
(online maximum); the second, one program per (sequence, head, block of keys), walks the query blocks at and
below the diagonal and sums exp2(s - lse) over the queries. K is read where the model keeps it: a query head
reads KV head h // G (grouped-query attention, no repeat_kv copy). Scores in float32 (16-bit inputs: the
tensor cores' float32 products; float32 inputs: IEEE products; Triton's interpreter: the inputs upcast to
float32, as its 16-bit dot is not exact), the column sums in float64 (a block's float32
probabilities summed exactly, as capture.column_stats sums eager attention's)."""
from __future__ import annotations

import functools

import triton
import triton.language as tl


@triton.jit
def _tile(base, rows, T, s_t, D: tl.constexpr, DP: tl.constexpr, UPCAST: tl.constexpr):
    """Rows `rows` (< T) of a [T, D] matrix at `base` (row stride s_t) as a [len(rows), DP] tile, zeros outside."""
    rd = tl.arange(0, DP)
    x = tl.load(base + rows[:, None] * s_t + rd[None, :], mask=(rows[:, None] < T) & (rd < D)[None, :], other=0)
    if UPCAST:
        x = x.to(tl.float32)
    return x


def _row_lse_kernel(q_ptr, k_ptr, lse_ptr, T, qk_scale, sq_b, sq_h, sq_t, sk_b, sk_h, sk_t,
                    H: tl.constexpr, G: tl.constexpr, D: tl.constexpr, DP: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    # q [B, H, T, D], k [B, H // G, T, D]; lse [B * H, T] float32, log2 units (qk_scale includes log2(e))
    pid_bh = tl.program_id(0)
    pid_m = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    q = _tile(q_ptr + b * sq_b + h * sq_h, rm, T, sq_t, D, DP, UPCAST)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    k_base = k_ptr + b * sk_b + (h // G) * sk_h
    hi = tl.minimum((pid_m + 1) * BLOCK_M, T)          # causal: keys up to the block's last query
    for n0 in range(0, hi, BLOCK_N):
        rn = n0 + tl.arange(0, BLOCK_N)
        k = _tile(k_base, rn, T, sk_t, D, DP, UPCAST)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        s = tl.where(rn[None, :] <= rm[:, None], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)      # padded rows past T: no key at all
        l_i = l_i * tl.exp2(m_i - m_safe) + tl.sum(tl.exp2(s - m_safe[:, None]), axis=1)
        m_i = m_new
    tl.store(lse_ptr + pid_bh * T + rm, m_i + tl.log2(l_i), mask=rm < T)


def _col_mass_kernel(q_ptr, k_ptr, lse_ptr, out_ptr, T, qk_scale, sq_b, sq_h, sq_t, sk_b, sk_h, sk_t,
                     H: tl.constexpr, G: tl.constexpr, D: tl.constexpr, DP: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    # out [B * H, T] float64: sum over queries i >= j of softmax(q_i k^T)[j]
    pid_bh = tl.program_id(0)
    pid_n = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k = _tile(k_ptr + b * sk_b + (h // G) * sk_h, rn, T, sk_t, D, DP, UPCAST)
    acc = tl.zeros([BLOCK_N], tl.float64)
    q_base = q_ptr + b * sq_b + h * sq_h
    for m0 in range((pid_n * BLOCK_N // BLOCK_M) * BLOCK_M, T, BLOCK_M):   # query blocks at and below the diagonal
        rm = m0 + tl.arange(0, BLOCK_M)
        q = _tile(q_base, rm, T, sq_t, D, DP, UPCAST)
        lse = tl.load(lse_ptr + pid_bh * T + rm, mask=rm < T, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        p = tl.exp2(s - lse[:, None])
        p = tl.where((rn[None, :] <= rm[:, None]) & (rm[:, None] < T), p, 0.0)
        acc += tl.sum(p.to(tl.float64), axis=0)
    tl.store(out_ptr + pid_bh * T + rn, acc, mask=rn < T)


@functools.cache
def kernels():
    return triton.jit(_row_lse_kernel), triton.jit(_col_mass_kernel)
