"""clip: shrink quantization ranges where that lowers the error, never below the functional outliers.

Sources: weight clipping by grid search of the range per output channel or group, as AWQ's
auto-clip (Lin et al. 2023, arXiv 2306.00978) and OmniQuant's learnable weight clipping (Shao et al.
2023, arXiv 2308.13137) do; activation clip ratios for static per-tensor scales as in
percentile/MSE calibration (e.g. Wu et al. 2020, arXiv 2004.09602).

  * weights: for each (output channel, group) the ratio r in the grid with the least error
    sum_j E[x_j^2] (W_ij - Q(W)_ij)^2, i.e. the output MSE under a diagonal input covariance measured on
    calibration data; W is then clamped to r x its range, so the quant engine (which takes each
    group's min/max) quantizes with exactly that range.
  * activations (static recipes): per linear the ratio with the least output error on calibration
    rows, subject to r x range >= `floor[linear]`: the report's systematic outliers at that input are
    functional (attention anchors, An et al. 2025) and must never be cut. With preserve-tokens on they
    are in float already, so the floor applies to the remaining range only.
"""
from __future__ import annotations

import logging
from dataclasses import replace

import torch

from ..quant.linear import effective_group_size
from ..quant.math import fake_quantize_tensor, rows
from .calib import InputStats
from .plan import Clip
from .qsim import fake_act

log = logging.getLogger(__name__)


@torch.no_grad()
def clip_weight(w: torch.Tensor, spec, ratios, x_sqmean: torch.Tensor | None = None, ragged: str = "halve"):
    """W clamped per (row, group) to the best ratio of its range; returns (new W, mean ratio chosen)."""
    g = effective_group_size(spec, w.shape[1], ragged)
    gran = spec.granularity
    fz = spec.zero_point == "float"
    wf = w.float()
    r0 = rows(wf, gran, g)                                   # [R, n]
    imp = torch.ones_like(wf) if x_sqmean is None else x_sqmean.float().expand_as(wf)
    imp = rows(imp.contiguous(), gran, g)
    best_err = torch.full((r0.shape[0],), float("inf"), device=w.device)
    best_r = torch.ones(r0.shape[0], device=w.device)
    for r in ratios:
        q = fake_quantize_tensor(r0, spec.bits, spec.symmetric, "channel", None, float(r), float_zero=fz,
                                 type=spec.type)
        err = ((q - r0).pow(2) * imp).sum(1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_r = torch.where(better, torch.full_like(best_r, float(r)), best_r)
    lo, hi = r0.amin(1, keepdim=True), r0.amax(1, keepdim=True)
    if not fz:      # an integer zero point's range always includes 0; a float zero's is [min, max] as found
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    lo, hi = lo * best_r.unsqueeze(1), hi * best_r.unsqueeze(1)
    out = torch.maximum(torch.minimum(r0, hi), lo).reshape(w.shape).to(w.dtype)
    return out, float(best_r.mean())


@torch.no_grad()
def clip_weights(linears: dict, recipe, cfg: Clip, stats: dict[str, InputStats] | None = None) -> dict[str, float]:
    """Clip every linear (name -> nn.Linear) in place for the recipe's weight spec; name -> mean ratio."""
    if recipe.weight is None:
        return {}
    chosen = {}
    for name, lin in linears.items():
        sq = stats[name].sqmean if stats is not None and name in stats else None
        new, r = clip_weight(lin.weight.data, recipe.weight, cfg.weight_ratios, sq, recipe.ragged)
        lin.weight.data.copy_(new)
        chosen[name] = round(r, 4)
    log.info("clip: weights of %d linears, mean ratio %.3f", len(chosen),
             sum(chosen.values()) / max(len(chosen), 1))
    return chosen


@torch.no_grad()
def activation_ratio(st: InputStats, weight: torch.Tensor, recipe, ratios, floor: float = 0.0,
                     preserved: bool = False) -> float:
    """The activation clip ratio with the least output error on the sample rows: of the static range, never cutting
    below `floor` (the systematic outliers this linear must still represent); of each token's (or group's) dynamic
    range for 4-bit dynamic activations (QuaRot clips A4 at 0.9 everywhere; here each linear gets its own)."""
    if recipe.act is None:
        return 1.0
    if recipe.act.dynamic:
        return dynamic_ratio(st, weight, recipe.act, ratios, preserved) if recipe.act.bits <= 4 else 1.0
    amax = float((st.absmax_kept if preserved else st.absmax).max())
    keep = st.sample_preserved if preserved else None
    x, w = st.sample, weight.float()
    return _least_error(x, w, [r for r in ratios if r * amax >= floor],
                        lambda r: fake_act(x, recipe.act, r * amax, keep))


@torch.no_grad()
def dynamic_ratio(st: InputStats, weight: torch.Tensor, spec, ratios, preserved: bool = False) -> float:
    """The shrink of every dynamic per-token (per-group) range with the least output error on the sample rows;
    preserved rows stay float and out of the error."""
    keep = st.sample_preserved if preserved else None
    x, w = st.sample, weight.float()
    if keep is not None:
        x = x[~keep]
    return _least_error(x, w, ratios, lambda r: fake_act(x, replace(spec, clip_ratio=float(r))))


def _least_error(x: torch.Tensor, w: torch.Tensor, ratios, quantized) -> float:
    """The first of `ratios` whose quantized input `quantized(r)` gives the least output error against x @ w.T
    (1.0 when there is none to try)."""
    ref = x @ w.t()
    best, best_err = 1.0, None
    for r in ratios:
        err = (quantized(r) @ w.t() - ref).pow(2).sum().item()
        if best_err is None or err < best_err:
            best, best_err = float(r), err
    return best
