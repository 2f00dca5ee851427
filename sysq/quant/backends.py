"""bitsandbytes backends (the real-kernel modules are in sysq/quant/kernels.py).

- bitsandbytes Linear8bitLt (LLM.int8 with an outlier threshold) and Linear4bit (nf4 / fp4), converted
  module by module on an already loaded float model (transformers refuses BitsAndBytesConfig with GGUF).
  On CPU, Linear8bitLt runs the int8 + float-outlier path only in eval() mode: we set eval().
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import SysqError


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
