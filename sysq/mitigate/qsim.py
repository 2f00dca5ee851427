"""The slice of a quantization recipe that the mitigation searches simulate: symmetric round-to-nearest
weights (per output channel or per group) and activations (per-tensor static or per-token dynamic).

The searches only need to *rank* candidate strengths and clip ratios by output error, so they use this
small simulator; the quant engine (sysq.quant) does the real quantization afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import SysqError


@dataclass(frozen=True)
class QSpec:
    w_bits: int | None = 8           # None: float weights
    w_group: int | None = None       # None: per output channel
    a_bits: int | None = 8           # None: float activations
    a_static: bool = False           # True: one calibrated per-tensor scale; False: per-token dynamic
    kv_bits: int | None = None

    @property
    def quantizes_activations(self) -> bool:
        return self.a_bits is not None


# recipe name -> the simulated spec; a recipe object from sysq.quant is read through `spec_of`.
NAMED = {
    "w8a8-static": QSpec(8, None, 8, True),
    "w8a8": QSpec(8, None, 8, False),
    "w8a16": QSpec(8, None, None),
    "w4a16": QSpec(4, 128, None),
    "w4a16-g128": QSpec(4, 128, None),
    "w4a16-pc": QSpec(4, None, None),
    "w4a8": QSpec(4, 128, 8, False),
    "w4a4": QSpec(4, 128, 4, False),
}


def spec_of(recipe) -> QSpec:
    """A QSpec from a recipe name ("w4a4+kv4" style modifiers allowed) or a recipe object exposing
    weight/activation fields (duck-typed: w_bits/weight_bits, group_size, a_bits/act_bits, static)."""
    if recipe is None:
        return QSpec(None, None, None)
    if isinstance(recipe, QSpec):
        return recipe
    if isinstance(recipe, str):
        base, *mods = recipe.split("+")
        if base not in NAMED:
            raise SysqError(f"unknown recipe {recipe!r} for mitigation search; known: {', '.join(NAMED)}")
        spec = NAMED[base]
        for m in mods:
            if m.startswith("kv") and m[2:].isdigit():
                spec = QSpec(spec.w_bits, spec.w_group, spec.a_bits, spec.a_static, int(m[2:]))
        return spec
    return _from_object(recipe)


def _from_object(r) -> QSpec:
    def pick(obj, *names, default=None):
        for n in names:
            if obj is not None and hasattr(obj, n):
                return getattr(obj, n)
        return default
    if hasattr(r, "name") and isinstance(r.name, str) and r.name.split("+")[0] in NAMED:
        return spec_of(r.name)
    w = pick(r, "weight", "weights", default=r)
    a = pick(r, "activation", "activations", "act", default=r)
    wb = pick(w, "bits", "w_bits", "weight_bits")
    ab = pick(a, "bits", "a_bits", "act_bits")
    group = pick(w, "group_size", "group", "w_group")
    if group in (-1, 0):
        group = None
    static = bool(pick(a, "static", "a_static", default=False))
    return QSpec(wb, group, ab, static)


def _qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def fake_weight(w: torch.Tensor, bits: int | None, group: int | None, clip: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Symmetric RTN of W [out, in] per output channel (group None) or per group of `group` inputs.
    `clip` scales the range (a float, or a tensor broadcastable to [out, n_groups, 1])."""
    if bits is None:
        return w
    out, cols = w.shape
    g = cols if group is None or group >= cols else group
    if cols % g:
        raise SysqError(f"group size {g} does not divide {cols} input channels")
    wg = w.reshape(out, cols // g, g)
    q = _qmax(bits)
    scale = (wg.abs().amax(-1, keepdim=True) * clip).clamp(min=1e-8) / q
    return (wg / scale).round().clamp(-q - 1, q).mul(scale).reshape(out, cols)


def fake_act(x: torch.Tensor, bits: int | None, static_max: float | torch.Tensor | None = None,
             keep: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric RTN of activations x [n, ch]: per-tensor with the calibrated `static_max`, else per token.
    Rows where `keep` is True stay in float (preserved tokens)."""
    if bits is None:
        return x
    q = _qmax(bits)
    if static_max is not None:
        scale = torch.as_tensor(static_max, dtype=x.dtype).clamp(min=1e-8) / q
    else:
        scale = x.abs().amax(-1, keepdim=True).clamp(min=1e-8) / q
    xq = (x / scale).round().clamp(-q - 1, q) * scale
    if keep is not None:
        xq = torch.where(keep.unsqueeze(-1), x, xq)
    return xq
