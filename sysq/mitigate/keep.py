"""keep-float: the few linears whose quantization costs the model most stay in float.

Which ones is measured, not guessed: the model is quantized once with the recipe (static scales, rounding), then
each quantized linear is put alone into an otherwise float copy and the KL of the copy's next-token distribution
from the float model's is taken on a few calibration windows. On SmolLM2 with static FP8 the last decoder layer's
linears lead by far (scripts/fp8_error_split.py, docs/FP8_ACCURACY.md): its output goes straight to the head.
Cost: one quantize and one forward per linear and window.
"""
from __future__ import annotations

import copy
import dataclasses
import logging

import torch
from tqdm.auto import tqdm

from ..arch import get_adapter

log = logging.getLogger(__name__)


@torch.no_grad()
def linear_costs(model, recipe, calib, windows: int = 1, quiet: bool = False) -> dict[str, float]:
    """KL(float || model with only that linear quantized by `recipe`), nats per token on the last `windows`
    calibration windows, for every linear the recipe quantizes; costliest first. Weights are rounded to nearest
    here whatever the recipe's rounding: the ranking is what counts, and GPTQ over the whole model would
    multiply the cost."""
    from ..quant.api import quant_linears, quantize
    from ..quant.recipes import get_recipe
    from .api import _logprobs, kl_to
    ids = getattr(calib, "ids", calib)
    score = ids[-windows:]
    q = copy.deepcopy(model)
    quantize(q, dataclasses.replace(get_recipe(recipe), method="rtn"), ids, quiet=True)
    qmods = {ql.name: ql for ql in quant_linears(q)}
    m = copy.deepcopy(model)
    ref = _logprobs(model, score)
    costs = {}
    for r in tqdm([r for r in get_adapter(m).linear_refs() if r.name in qmods], desc="keep-float: linears",
                  disable=quiet, leave=False):
        setattr(r.parent, r.attr, qmods[r.name])     # not ref.replace: the float module goes back unchanged
        costs[r.name] = kl_to(m, score, ref)
        setattr(r.parent, r.attr, r.module)
    return dict(sorted(costs.items(), key=lambda kv: -kv[1]))


def weight_share(model, names) -> float:
    """Share of the decoder linears' weights that `names` hold."""
    sizes = {r.name: r.module.in_features * r.module.out_features for r in get_adapter(model).linear_refs()}
    return sum(sizes[n] for n in names) / max(sum(sizes.values()), 1)
