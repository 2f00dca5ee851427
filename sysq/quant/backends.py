"""Real integer backends.

- Int8Linear: W8A8 through torch._int_mm (int8 x int8 -> int32), then dequantize with the activation
  scale (per token, dynamic; or per tensor, static) times the weight scale (per output channel). Built from
  a quantized QuantLinear, so its codes are the simulated path's codes: the two agree up to float rounding
  of the final rescale. CPU has no shape constraints; CUDA (checked on an H200, torch 2.11) needs rows > 16
  and in/out features multiples of 8, so int_mm zero-pads there and slices the result.
- bitsandbytes Linear8bitLt (LLM.int8 with an outlier threshold) and Linear4bit (nf4 / fp4), converted
  module by module on an already loaded float model (transformers refuses BitsAndBytesConfig with GGUF).
  On CPU, Linear8bitLt runs the int8 + float-outlier path only in eval() mode: we set eval().
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SysqError
from .linear import QuantLinear
from .math import qparams, quantize
from .observers import token_keep_mask


def _pad_to(x: torch.Tensor, dim: int, multiple: int, minimum: int = 0) -> torch.Tensor:
    n = x.shape[dim]
    target = max(minimum, -(-n // multiple) * multiple)
    if target == n:
        return x
    pad = [0, 0] * (x.dim() - 1 - dim) + [0, target - n]
    return F.pad(x, pad)


def int_mm(a: torch.Tensor, b_t: torch.Tensor) -> torch.Tensor:
    """a [m, k] int8 @ b_t [k, n] int8 -> int32 [m, n], padding where CUDA's kernel needs it."""
    if a.device.type != "cuda":
        return torch._int_mm(a, b_t)
    m, n = a.shape[0], b_t.shape[1]
    ap = _pad_to(_pad_to(a, 0, 8, minimum=17), 1, 8)
    bp = _pad_to(_pad_to(b_t, 0, 8), 1, 8)
    return torch._int_mm(ap, bp)[:m, :n]


class Int8Linear(nn.Module):
    """y = (q_x @ q_w^T) * s_x * s_w + b with integer accumulation (torch._int_mm)."""

    def __init__(self, ql: QuantLinear):
        super().__init__()
        w, a = ql.weight_spec, ql.act_spec
        if not ql.quantized or w is None or w.bits != 8 or not w.symmetric or w.granularity != "channel":
            raise SysqError(f"{ql.name}: Int8Linear needs an int8 symmetric per-channel quantized weight")
        if a is None or a.bits != 8 or not a.symmetric or a.granularity not in ("token", "tensor"):
            raise SysqError(f"{ql.name}: Int8Linear needs int8 symmetric per-token or per-tensor activations")
        if ql.preserve_channels is not None:
            raise SysqError(f"{ql.name}: Int8Linear does not support preserve_channels; use the simulated path")
        self.in_features, self.out_features, self.name = ql.in_features, ql.out_features, ql.name
        self.act_spec = a
        self.register_buffer("qweight_t", ql.qweight.t().contiguous())      # [in, out] int8
        self.register_buffer("w_scale", ql.w_scale.reshape(1, -1).float())  # [1, out]
        self.register_buffer("act_scale", ql.act_scale)
        self.bias = ql.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act_spec
        x2 = x.reshape(-1, self.in_features).float()
        keep = token_keep_mask(x2, a.preserve_threshold, ())
        xs = x2 if keep is None else x2.masked_fill(keep.unsqueeze(-1), 0)
        if a.dynamic:
            s, _ = qparams(xs, 8, True, a.granularity, None, a.clip_ratio)
        else:
            s = self.act_scale.reshape(1, 1)
        acc = int_mm(quantize(x2, s, 0.0, 8), self.qweight_t)
        y = acc.float() * (s * self.w_scale)
        if keep is not None and bool(keep.any()):   # preserved tokens: float matmul with the dequantized weight
            w = self.qweight_t.float() * self.w_scale
            y[keep] = x2[keep] @ w
        if self.bias is not None:
            y = y + self.bias.float()
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        how = "dynamic per token" if self.act_spec.dynamic else "static per tensor"
        return f"{self.name} in={self.in_features}, out={self.out_features}, int8 _int_mm, a8 {how}"


# ---- bitsandbytes ----------------------------------------------------------------------------------

def bnb_linear(linear: nn.Linear, kind: str, threshold: float = 6.0) -> nn.Module:
    """A bitsandbytes copy of `linear`: kind 'int8' (Linear8bitLt) or 'nf4' / 'fp4' (Linear4bit)."""
    import bitsandbytes as bnb

    w = linear.weight.detach().float().cpu()
    bias = linear.bias is not None
    dev = linear.weight.device
    if kind == "int8":
        m = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=bias, has_fp16_weights=False,
                                threshold=threshold)
        m.weight = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False)
    elif kind in ("nf4", "fp4"):
        m = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=bias, compute_dtype=linear.weight.dtype,
                              quant_type=kind)
        m.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type=kind)
    else:
        raise SysqError(f"unknown bitsandbytes kind {kind!r}; allowed: int8, nf4, fp4")
    if bias:
        m.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
    m = m.to(dev)   # quantizes the weight (Int8Params / Params4bit quantize on .to)
    m.eval()        # CPU LLM.int8 runs the outlier decomposition only in eval mode
    return m
