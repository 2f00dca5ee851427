"""GPTQ (Frantar et al. 2023): error-compensating weight rounding from calibration inputs.

For each linear, H = 2/n sum x x^T over its calibration inputs. Columns are quantized one at a time; the
rounding error of column i, divided by [H^-1]_ii, is spread over the columns not yet quantized using the
Cholesky factor of H^-1. Columns go in blocks of `block_size` with lazy batch updates of the rest of W.
Options: dampening (fraction of mean diag(H)), act-order (columns by decreasing diag(H)), group size.
With act-order and groups, group qparams come from the original weight ("static groups"), so groups stay
contiguous in the stored layout.

The model is processed layer by layer (sysq.sequential): inputs of layer i are the outputs of the already
quantized layers 0..i-1 on the calibration windows, so memory stays bounded by one layer's activations.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from ..arch import get_adapter
from .linear import QuantLinear
from .math import FP8, dequantize, qparams, quantize

log = logging.getLogger(__name__)


def _group_params(w: torch.Tensor, spec, group_size):
    """Per-row (scale, zero) [out, 1] for a slice of columns."""
    fz = spec.zero_point == "float"
    return qparams(w, spec.bits, spec.symmetric, "channel", None, spec.clip_ratio, spec.mse, fz, spec.type)


@torch.no_grad()
def gptq_quantize(weight: torch.Tensor, H: torch.Tensor, spec, group_size: int | None = None,
                  block_size: int = 128, damp: float = 0.01, act_order: bool = False):
    """Codes [out, in] (int8, or float8_e4m3fn for FP8 specs), scale and zero [out, groups] of `weight` [out, in]
    given Hessian H [in, in]."""
    W = weight.detach().clone().float()
    H = H.clone().float()
    out_f, in_f = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0

    gran = spec.granularity
    fz = spec.zero_point == "float"
    g = group_size if gran == "group" else in_f
    n_groups = in_f // g
    dev = W.device
    scales = torch.zeros(out_f, n_groups, device=dev)
    zeros = torch.zeros(out_f, n_groups, device=dev)
    if gran == "tensor":
        s, z = qparams(W, spec.bits, spec.symmetric, "tensor", None, spec.clip_ratio, spec.mse, fz, spec.type)
        scales[:], zeros[:] = s.reshape(()), z.reshape(())
    elif gran == "channel" or act_order:     # fixed qparams: per row, or static groups from the original W
        for j in range(n_groups):
            scales[:, j:j + 1], zeros[:, j:j + 1] = _group_params(W[:, j * g:(j + 1) * g], spec, g)
    fixed = gran != "group" or act_order

    perm = torch.arange(in_f, device=dev)
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H = W[:, perm], H[perm][:, perm]
    invperm = torch.argsort(perm)

    H += damp * torch.mean(torch.diag(H)) * torch.eye(in_f, device=dev)
    L = torch.linalg.cholesky(H)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)

    Q = torch.zeros(out_f, in_f, dtype=FP8 if spec.type == "float" else torch.int8, device=dev)
    order = perm.tolist()                     # on the host: reading perm[col] on a GPU would wait per column
    for i1 in range(0, in_f, block_size):
        i2 = min(i1 + block_size, in_f)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            col = i1 + i                      # position in the (possibly permuted) order
            orig = order[col]                 # original column index -> group
            grp = orig // g
            if not fixed and orig % g == 0:   # dynamic groups: qparams from the error-updated weights
                sl = W[:, col:col + g].clone()
                sl[:, : i2 - col] = W1[:, i:i + min(g, i2 - col)]
                scales[:, grp:grp + 1], zeros[:, grp:grp + 1] = _group_params(sl, spec, g)
            s, z = scales[:, grp:grp + 1], zeros[:, grp:grp + 1]
            w = W1[:, i:i + 1]
            q = quantize(w, s, z, spec.bits, fz, spec.type)
            Q[:, col] = q[:, 0]
            err = (w - dequantize(q, s, z, fz)) / Hinv1[i, i]
            W1[:, i:] -= err @ Hinv1[i:i + 1, i:]
            Err1[:, i:i + 1] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return Q[:, invperm], scales, zeros


@torch.no_grad()
def gptq_block(qls: list[QuantLinear], run_batches, block_size: int = 128, damp: float = 0.01,
               act_order: bool = False) -> int:
    """GPTQ for the QuantLinears of one block: H from their inputs while `run_batches()` passes the calibration
    activations through the block, then error-compensating rounding. Returns how many were quantized."""
    qls = [q for q in qls if q.weight_spec is not None and not q.quantized]
    hess = {id(q): [torch.zeros(q.in_features, q.in_features, device=q.weight.device), 0] for q in qls}

    def add(mod, args):
        x = args[0].detach().reshape(-1, mod.in_features).float()
        entry = hess[id(mod)]
        n_new = entry[1] + x.shape[0]
        entry[0].mul_(entry[1] / n_new).addmm_(x.t(), x, alpha=2 / n_new)
        entry[1] = n_new

    hooks = [q.register_forward_pre_hook(add) for q in qls]
    try:
        run_batches()
    finally:
        for hk in hooks:
            hk.remove()
    for q in qls:
        log.info("gptq %s", q.name)
        codes, s, z = gptq_quantize(q._masked(q.weight.data), hess.pop(id(q))[0], q.weight_spec, q.group_size,
                                    block_size, damp, act_order)
        q.set_quantized_weight(codes, s, z)
    return len(qls)


@torch.no_grad()
def layer_inputs(model: nn.Module, calib) -> tuple[list[torch.Tensor], dict]:
    """The inputs of decoder layer 0, one [1, T, hidden] tensor per calibration window, and the keyword
    arguments the model passes to every layer (position embeddings, mask): what layer-by-layer passes carry."""
    from ..sequential import batches_of, capture
    hidden, _args, kwargs = capture(model, batches_of(calib, 1), None)
    return hidden, kwargs[0]


def run_layer(layer: nn.Module, x: torch.Tensor, kw: dict) -> torch.Tensor:
    """One decoder layer's hidden-state output for input x and the captured keyword arguments."""
    out = layer(x, **kw)
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def gptq_model(model: nn.Module, calib, block_size: int = 128, damp: float = 0.01, act_order: bool = False,
               quiet: bool = False, device=None) -> int:
    """Quantize the weights of every QuantLinear of `model` with GPTQ, layer by layer (sysq.sequential): the
    inputs of layer i are the outputs of the already quantized layers 0..i-1. device=None: every layer stays
    where it is; a device: each layer visits it in turn. Returns the count."""
    from ..sequential import batches_of, run_layers
    refs = get_adapter(model).linear_refs()
    done = 0

    def step(block):
        nonlocal done
        qls = [r.module for r in refs if r.layer == block.index and isinstance(r.module, QuantLinear)]
        done += gptq_block(qls, block.forward, block_size, damp, act_order)

    run_layers(model, batches_of(calib, 1), [step], device, quiet=quiet, desc="gptq")
    return done
