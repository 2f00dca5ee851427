"""calibrate() and quantize_weights() one decoder layer at a time, on a device the model does not fit on.

The sequential pipeline (sysq.sequential) for the quant engine, with the in-memory semantics kept:
  * static activation ranges of layer i come from the float model's activations: a float stream of the
    calibration activations is carried beside the runner's, through the calibrating (float) forward;
  * GPTQ's Hessians of layer i come from the outputs of the already quantized layers 0..i-1: the stream
    the runner carries, propagated through each layer once it is quantized;
  * RTN needs no activations: each layer visits the device to be rounded.
On the same device and batch size this gives the same scales and codes as calibrate() + quantize_weights().
"""
from __future__ import annotations

import logging
from collections import defaultdict

import torch
from tqdm.auto import tqdm

from ..arch import get_adapter
from ..errors import SysqError
from ..sequential import Block, batches_of, on_device, run_layers
from .api import observing
from .gptq import gptq_block
from .linear import QuantLinear
from .recipes import get_recipe

log = logging.getLogger(__name__)


def _is_static(q: QuantLinear) -> bool:
    return q.act_spec is not None and not q.act_spec.dynamic


def calibrate_block(block: Block, qls: list[QuantLinear], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Static activation ranges of `qls` (inside block.module) from `inputs`; returns the block's float outputs."""
    with observing([q for q in qls if _is_static(q)]):
        return block.forward(inputs)


@torch.no_grad()
def quantize_layers(model, recipe, calib, device, quiet: bool = False, batch_size: int = 1) -> None:
    """Static scales and weight rounding of every QuantLinear (after prepare()), layer by layer on `device`."""
    r = get_recipe(recipe)
    if r.method == "learned":
        raise SysqError("learned rounding runs on the model in memory (its layer-by-layer search is not on the "
                        "sequential pipeline yet): use gptq (for INT4 weights under auto: method 'auto-fast+gptq', CLI --mitigate "
                        "auto-fast+gptq), or pipeline='memory' on a device that holds the model (loaded without offload)")
    ad = get_adapter(model)
    by_layer: dict[int, list[QuantLinear]] = defaultdict(list)
    for ref in ad.linear_refs():
        if isinstance(ref.module, QuantLinear):
            by_layer[ref.layer].append(ref.module)
    inside = {id(q) for qs in by_layer.values() for q in qs}
    outside = [m for m in model.modules() if isinstance(m, QuantLinear) and id(m) not in inside]   # lm_head
    if any(_is_static(q) for q in outside):
        raise SysqError("the sequential pipeline calibrates decoder layers only, and this recipe quantizes the "
                        "lm_head's input with a static scale: use pipeline='memory' (a device that holds the model)")
    static = any(_is_static(q) for qs in by_layer.values() for q in qs)
    gptq = r.method == "gptq"
    if not static and not gptq:                     # RTN: no activations needed
        for i, layer in enumerate(tqdm(ad.layers(), desc="quantize", disable=quiet, leave=False)):
            with on_device(layer, device):
                for q in by_layer[i]:
                    q.quantize_weight()
    else:
        if calib is None:
            raise SysqError("this recipe calibrates (static activation scales or GPTQ): pass calibration windows, "
                            "e.g. sysq.calibration(tokenizer, n=32)")
        float_in: list = []                         # the float model's activations at the current layer

        def step(block: Block) -> None:
            qls = by_layer[block.index]
            if static:
                float_in[:] = [calibrate_block(block, qls, float_in[0] if float_in else block.inputs)]
            if gptq:
                gptq_block(qls, block.forward, r.gptq_block_size, r.gptq_damp, r.gptq_act_order)
            for q in qls:
                q.quantize_weight()                 # RTN (and whatever GPTQ left)
            if not gptq:                            # nothing reads the quantized outputs: carry the float ones
                block.outputs = float_in[0]

        run_layers(model, batches_of(calib, batch_size), [step], device, quiet=quiet, desc="quantize")
    for q in outside:
        q.quantize_weight()
