"""The recipe as the mitigation searches simulate it, on top of sysq.quant's quantizer math.

The searches (smoothing strength, clip ratios) rank candidates by the output error of one linear on
calibration rows; they call the same free functions the quant engine uses, so what they optimise is
what the engine will do: weights by the recipe's weight spec (RTN), activations per token (dynamic) or
with one calibrated per-tensor range (static), preserved tokens left in float; INT or FP8 grids alike
(QuantSpec.type).
"""
from __future__ import annotations

import torch

from ..quant.linear import effective_group_size
from ..quant.math import fake_quantize, fake_quantize_tensor, qparams_from_range
from ..quant.recipes import QuantSpec, Recipe, get_recipe


def recipe_of(recipe) -> Recipe | None:
    return None if recipe is None else get_recipe(recipe)


def fake_weight(w: torch.Tensor, spec: QuantSpec | None, ragged: str = "halve") -> torch.Tensor:
    """W [out, in] quantized-dequantized with the weight spec (None: float)."""
    if spec is None:
        return w
    g = effective_group_size(spec, w.shape[1], ragged)
    return fake_quantize_tensor(w, spec.bits, spec.symmetric, spec.granularity, g, spec.clip_ratio,
                                float_zero=spec.zero_point == "float", type=spec.type)


def fake_act(x: torch.Tensor, spec: QuantSpec | None, static_absmax=None, keep: torch.Tensor | None = None):
    """x [n, ch] quantized-dequantized with the activation spec; static specs use [-absmax, absmax]
    (the calibrated range, symmetric presets); rows where `keep` is True stay in float."""
    if spec is None:
        return x
    if spec.dynamic:
        src = x if keep is None else x.masked_fill(keep.unsqueeze(-1), 0)
        if spec.granularity == "tensor":
            xq = fake_quantize_tensor(src, spec.bits, spec.symmetric, "tensor", None, spec.clip_ratio, type=spec.type)
        else:
            g = effective_group_size(spec, x.shape[-1], "halve")      # as QuantLinear (activation groups: +agN)
            xq = fake_quantize_tensor(x, spec.bits, spec.symmetric, spec.granularity, g, spec.clip_ratio,
                                      type=spec.type)
    else:
        hi = torch.as_tensor(static_absmax, dtype=torch.float32) * spec.clip_ratio
        scale, zero = qparams_from_range(-hi, hi, spec.bits, spec.symmetric, type=spec.type)
        xq = fake_quantize(x, scale, zero, spec.bits, type=spec.type)
    if keep is not None:
        xq = torch.where(keep.unsqueeze(-1), x, xq)
    return xq
