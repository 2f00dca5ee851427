"""The Triton kernel behind capture's per-token Q/K/V norms (imported on first use: Triton is optional).

For each token of a layer's q, k and v projections ([B, T, n * D] each, last dimension contiguous; views of a fused
qkv output are fine), the mean over the heads of each head's L2 norm, as float32 into a [B, T, 3] output, one launch
per layer. The squares are summed in float64 and the mean taken in float64, then rounded once to float32: the
digits of torch's `vector_norm(..., dtype=float64).mean(-1).float()` (a bf16 or fp16 square is exact in float64, and
so is a head's sum in any order unless its values span more than 2^15; another order of the mean's float64 sum moves
the last bits, not the float32), each projection read in place: torch's form converts the whole [L, B, T, n * D]
stack to float64 first (call A18, one H200: 6.2 ms of an 8B detect's device time)."""
from __future__ import annotations

import contextlib
import functools

import torch
import triton
import triton.language as tl

BLOCK_R = 16


@triton.jit
def _mean_head_norm(x_ptr, rows, ok, T, s_b, s_t, H: tl.constexpr, D: tl.constexpr, DP: tl.constexpr):
    base = x_ptr + (rows // T).to(tl.int64) * s_b + (rows % T).to(tl.int64) * s_t
    rd = tl.arange(0, DP)
    acc = tl.zeros(rows.shape, tl.float64)
    for h in tl.static_range(H):
        x = tl.load(base[:, None] + h * D + rd[None, :], mask=ok[:, None] & (rd < D)[None, :], other=0)
        x = x.to(tl.float64)
        acc += tl.sqrt(tl.sum(x * x, axis=1))
    return (acc / H).to(tl.float32)


def _qkv_norms_kernel(q_ptr, k_ptr, v_ptr, out_ptr, R, T, sq_b, sq_t, sk_b, sk_t, sv_b, sv_t,
                      HQ: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr, DP: tl.constexpr,
                      BLOCK_R: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    ok = rows < R
    out = out_ptr + rows.to(tl.int64) * 3
    tl.store(out, _mean_head_norm(q_ptr, rows, ok, T, sq_b, sq_t, HQ, D, DP), mask=ok)
    tl.store(out + 1, _mean_head_norm(k_ptr, rows, ok, T, sk_b, sk_t, HKV, D, DP), mask=ok)
    tl.store(out + 2, _mean_head_norm(v_ptr, rows, ok, T, sv_b, sv_t, HKV, D, DP), mask=ok)


@functools.cache
def _kernel():
    return triton.jit(_qkv_norms_kernel)


def qkv_norms_into(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, head_dim: int, out: torch.Tensor) -> None:
    """out[b, t, j] = mean over the heads of ||p[b, t, head]||_2 for p = (q, k, v)[j] (each [B, T, n * head_dim], k
    and v with the same heads; out [B, T, 3] contiguous float32)."""
    B, T, _ = q.shape
    ok = all(p.shape[:2] == (B, T) and p.stride(-1) == 1 and p.shape[-1] % head_dim == 0 for p in (q, k, v))
    if not ok or k.shape != v.shape or not out.is_contiguous() or out.shape != (B, T, 3) or \
            out.dtype != torch.float32:
        raise ValueError(f"qkv_norms_into: q {tuple(q.stride())}, k {tuple(k.shape)}, v {tuple(v.shape)}, head_dim "
                         f"{head_dim}, out {tuple(out.shape)} {out.dtype}: needs [B, T, n * head_dim] inputs with a "
                         f"contiguous last dimension, k and v alike, and a contiguous float32 [B, T, 3] out")
    R = B * T
    with torch.cuda.device(q.device) if q.device.type == "cuda" else contextlib.nullcontext():
        _kernel()[(triton.cdiv(R, BLOCK_R),)](q, k, v, out, R, T, q.stride(0), q.stride(1), k.stride(0), k.stride(1),
                                              v.stride(0), v.stride(1), HQ=q.shape[-1] // head_dim,
                                              HKV=k.shape[-1] // head_dim, D=head_dim,
                                              DP=triton.next_power_of_2(head_dim), BLOCK_R=BLOCK_R)
