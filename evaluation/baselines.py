"""Peer baselines for the comparison grid, run by the peer libraries themselves.

bitsandbytes int8 / nf4 go through sysq.quantize's bnb backends (bitsandbytes' own Linear8bitLt / Linear4bit
modules, see sysq/quant/backends.py). optimum-quanto lives here: `quantize(model, weights=..., activations=...)`,
a calibration pass for static activation scales, then `freeze`.
"""
from __future__ import annotations

import logging
from collections import Counter

import torch
from torch import nn

from sysq.arch import get_adapter
from sysq.errors import SysqError

log = logging.getLogger(__name__)

QUANTO = {
    # name: (weights, activations); quanto's qint4 weights use its default group size (128)
    "quanto-w8a8": ("qint8", "qint8"),
    "quanto-w8": ("qint8", None),
    "quanto-w4": ("qint4", None),
}


def _module_name(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


@torch.no_grad()
def quanto_quantize(model: nn.Module, name: str, calib=None, quiet: bool = False) -> dict:
    """optimum-quanto on `model` in place: quantize -> (calibrate) -> freeze. lm_head stays float, as in sysq."""
    from optimum import quanto

    if name not in QUANTO:
        raise SysqError(f"unknown quanto baseline {name!r}; known: {', '.join(QUANTO)}")
    weights, acts = QUANTO[name]
    lm_head = _module_name(model, get_adapter(model).lm_head())
    quanto.quantize(model, weights=getattr(quanto, weights), activations=getattr(quanto, acts) if acts else None,
                    exclude=[lm_head])
    if acts is not None:
        if calib is None:
            raise SysqError(f"{name} has static activation scales: pass calibration windows")
        from sysq.quant.observers import run_model

        # no_grad, never inference_mode: quanto's 4-bit tensors fail under inference_mode (DESIGN.md §5)
        with quanto.Calibration():
            run_model(model, calib, quiet=quiet, desc=f"calibrating {name}")
    quanto.freeze(model)
    return {"library": f"optimum-quanto {_version('optimum-quanto')}", "weights": weights, "activations": acts,
            "calibration": calib.settings() if acts is not None and hasattr(calib, "settings") else None}


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def tensor_bytes(t: torch.Tensor) -> int:
    """Storage bytes of a tensor. Tensor subclasses (quanto's QTensors) report their float shape and dtype,
    so count the inner tensors they hold (int codes, scales, shifts) instead."""
    if hasattr(t, "__tensor_flatten__") and type(t) not in (torch.Tensor, nn.Parameter):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    total = t.numel() * t.element_size()
    qs = getattr(t, "quant_state", None)  # bitsandbytes 4-bit keeps absmax outside the module's buffers
    if qs is not None and getattr(qs, "absmax", None) is not None:
        total += qs.absmax.numel() * qs.absmax.element_size()
    return total


def weight_bytes(model: nn.Module) -> int:
    """Bytes of parameters and buffers, each tensor once (tied embeddings count once)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += tensor_bytes(t)
    return total


def linear_modules(model: nn.Module) -> dict[str, int]:
    """Module class -> count over the model's linears: shows which kernels a configuration really runs."""
    return dict(Counter(type(ref.module).__name__ for ref in get_adapter(model).linear_refs()))
