"""Attention statistics without eager attention: the mass each key receives, from Q and K.

detect's attention statistics need, per layer, the attention mass each key position receives (summed over the
queries: [B, H, T]) and, for one plot, the probabilities of the first window's first tokens. Eager attention
gives them by materialising [B, H, T, T] probabilities (scores, mask, softmax, casts: about 1 GB of traffic per
layer of an 8B model at 8 x 512 tokens) and expanding K and V to every query head. `sysq_mass` is an attention
implementation registered the transformers way (AttentionInterface, sdpa's mask function under the same name):
the layer's output comes from transformers' sdpa attention, unchanged, and in place of the probabilities the
attention module returns an AttentionMass, which holds the query and key states (after RoPE, K not expanded)
and computes what the statistics read:
- received(): the [B, H, T] float64 mass per key, by two Triton passes over Q K^T (sysq/_mass_triton.py) for
  plain causal attention on a GPU; with a mask (sliding windows, padding), from the probabilities in torch;
- corner(n): [H, n, n] probabilities of the first window's first n tokens (causal: a row there sees only keys
  there, so the corner's softmax is the full one).

The probabilities are computed in float32 from the states (eager attention rounds 16-bit models' scores and
probabilities to 16 bits), so on a bf16 model the mass agrees with eager's to about 16-bit precision; on a
float32 model to float32 rounding. SYSQ_ATTENTION_MASS=0 keeps eager attention (checks, timing).
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

import torch

from .errors import UnsupportedArchitecture

NAME = "sysq_mass"
BLOCK = 64              # queries and keys per tile (GPU); the interpreter takes 16


def available(device) -> bool:
    """Whether the Triton passes run on `device`: CUDA with Triton, or the CPU under TRITON_INTERPRET=1 (Triton's
    interpreter: slow, for tests). SYSQ_ATTENTION_MASS=0: never."""
    from .quant.gemv import triton_runs_on
    return os.environ.get("SYSQ_ATTENTION_MASS", "1") != "0" and triton_runs_on(device)


@dataclass
class AttentionMass:
    """What an attention module returns in place of its probabilities under `sysq_mass`."""

    query: torch.Tensor              # [B, H, T, D]
    key: torch.Tensor                # [B, Hkv, T, D]
    scale: float
    mask: torch.Tensor | None        # sdpa's: None (causal), bool (True: attend) or additive float

    @property
    def shape(self) -> tuple:
        B, H, T = self.query.shape[:3]
        return B, H, T, self.key.shape[2]

    def received(self) -> torch.Tensor:
        """[B, H, T] float64: the attention mass each key receives, summed over the queries."""
        if self.mask is None and available(self.query.device):
            return received_mass(self.query, self.key, self.scale)
        return self.probabilities().sum(2, dtype=torch.float64)

    def corner(self, n: int) -> torch.Tensor:
        """[H, n, n] float32 probabilities of the first window's first n queries and keys."""
        n = min(n, self.query.shape[2])
        mask = None if self.mask is None else self.mask[:1, ..., :n, :n]
        return AttentionMass(self.query[:1, :, :n], self.key[:1, :, :n], self.scale, mask).probabilities()[0]

    def probabilities(self) -> torch.Tensor:
        """[B, H, T, T] float32 softmax(q k^T * scale + mask), materialised (the fallback, and the reference)."""
        q, k = self.query.float(), self.key.float()
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        s = q @ k.transpose(-1, -2) * self.scale
        if self.mask is None:
            T, L = s.shape[-2:]
            s = s.masked_fill(torch.ones(T, L, dtype=torch.bool, device=s.device).triu(L - T + 1), -math.inf)
        elif self.mask.dtype == torch.bool:
            s = s.masked_fill(~self.mask, -math.inf)
        else:
            s = s + self.mask.float()
        return torch.softmax(s, -1).nan_to_num_(0.0)           # a row with no key: no mass


def received_mass(query: torch.Tensor, key: torch.Tensor, scale: float) -> torch.Tensor:
    """[B, H, T] float64 mass each key receives under causal attention softmax(q k^T * scale), by the Triton
    passes (query [B, H, T, D], key [B, Hkv, T, D], H a multiple of Hkv)."""
    from ._mass_triton import kernels
    B, H, T, D = query.shape
    Hkv = key.shape[1]
    if H % Hkv or key.shape[2] != T:
        raise ValueError(f"received_mass: query {tuple(query.shape)} and key {tuple(key.shape)} are not one causal "
                         f"self-attention with grouped key heads")
    q, k = (t if t.stride(-1) == 1 else t.contiguous() for t in (query, key))
    interp = q.device.type != "cuda"
    block = 16 if interp else BLOCK
    lse = torch.empty((B * H, T), dtype=torch.float32, device=q.device)
    out = torch.empty((B * H, T), dtype=torch.float64, device=q.device)
    row, col = kernels()
    args = (T, float(scale) * math.log2(math.e), q.stride(0), q.stride(1), q.stride(2),
            k.stride(0), k.stride(1), k.stride(2))
    meta = dict(H=H, G=H // Hkv, D=D, DP=max(16, 1 << (D - 1).bit_length()), BLOCK_M=block, BLOCK_N=block,
                PRECISION="ieee" if q.dtype == torch.float32 or interp else "tf32", UPCAST=interp)
    launch = {} if interp else dict(num_warps=4, num_stages=2)
    grid = (B * H, -(-T // block))
    # Triton launches on the current CUDA device: that of the tensors (a model split over GPUs)
    with torch.cuda.device(q.device) if q.device.type == "cuda" else contextlib.nullcontext():
        row[grid](q, k, lse, *args, **meta, **launch)
        col[grid](q, k, lse, out, *args, **meta, **launch)
    return out.view(B, H, T)


def mass_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                           **kwargs):
    """transformers' attention-function signature: sdpa's output, and an AttentionMass in place of the
    probabilities."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    extra = [k for k in ("softcap", "s_aux", "sinks") if kwargs.get(k) is not None]
    if extra or dropout or not getattr(module, "is_causal", True):
        raise UnsupportedArchitecture(f"{NAME}: this attention takes {extra or 'dropout or no causal mask'}, which "
                                      f"the attention mass leaves out; detect it under eager attention")
    out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                    **kwargs)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    return out, AttentionMass(query, key, scale, attention_mask)


def register() -> None:
    """Register `sysq_mass` with transformers (attention function, and sdpa's mask function); idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
    AttentionInterface.register(NAME, mass_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


@contextlib.contextmanager
def enabled(model):
    """Run the block with `sysq_mass` attention, then restore the model's implementation."""
    from .arch import get_adapter
    register()
    ad = get_adapter(model)
    before = ad.set_attention(NAME)
    try:
        yield
    finally:
        ad.set_attention(before)
