"""smooth: per-channel scaling that moves activation outliers into the weights (function-preserving).

Two statistics (Smooth.statistic): "max", SmoothQuant's migration (below); "mean", AWQ's activation-aware
scale s_j = mean|X_j|^a (Lin et al. 2023, arXiv 2306.00978): the input channels that carry the most
activation get their weight columns scaled up before rounding, so those columns lose less; the same search
over a (identity included) by the simulated recipe's output error, the same folds.

Source: Xiao et al. 2023, "SmoothQuant" (arXiv 2211.10438): s_j = max|X_j|^a / max|W_j|^(1-a); the linear
sees X/s and W*s, and 1/s is folded into whatever produced X. Where SmoothQuant fixes a (0.5) and folds
only into norms, sysq
  * folds into every exact place the adapter declares (``adapter.mappings(i)``): the norm before
    q/k/v and gate/up, v -> o (per key/value head under GQA: one scale serves the `groups` query heads
    that read it), up -> down (gate_up's up half when fused; fc1 -> fc2 for ReLU MLPs);
  * searches a per mapping by the output error of the simulated recipe on calibration rows, with the
    identity (no scaling) always among the candidates (as AWQ's grid search, Lin et al. 2023,
    arXiv 2306.00978), so a layer that does not profit is left alone;
  * measures max|X| over the tokens that stay quantized: with preserve-tokens on, the outlier tokens
    are left in float, so they must not set the migration strength either.
"""
from __future__ import annotations

import dataclasses
import logging

import torch

from ..arch import Mapping, get_adapter
from .calib import InputStats, TokenRule, input_stats
from .plan import Smooth
from .qsim import fake_act, fake_weight, recipe_of

log = logging.getLogger(__name__)


def mapping_input(m: Mapping):
    """The module whose input is the mapping's X (all targets share it)."""
    return m.targets[0]


def weight_absmax(m: Mapping) -> torch.Tensor:
    """max_i |W_ij| over the rows of every target, per input column j."""
    return torch.stack([t.weight.detach().abs().amax(0) for t in m.targets]).amax(0).float()


def reduce_groups(v: torch.Tensor, m: Mapping, head_dim: int) -> torch.Tensor:
    """Target-column statistic -> one per source row: GQA shares a v row among `groups` o columns."""
    if m.groups == 1:
        return v
    return v.view(-1, m.groups, head_dim).amax(1).flatten()


def expand_groups(s: torch.Tensor, m: Mapping, head_dim: int) -> torch.Tensor:
    """Per-source-row scale -> per-target-column scale (repeat_kv order: kv head j serves heads j*g..)."""
    if m.groups == 1:
        return s
    return s.view(-1, 1, head_dim).expand(-1, m.groups, head_dim).flatten()


def smoothing_scale(act_absmax: torch.Tensor, w_absmax: torch.Tensor, alpha: float) -> torch.Tensor:
    s = act_absmax.clamp(min=1e-5).pow(alpha) / w_absmax.clamp(min=1e-5).pow(1 - alpha)
    s = s.clamp(min=1e-5)
    return torch.where(act_absmax > 0, s, torch.ones_like(s))   # dead channels: leave alone


def awq_scale(act_absmean: torch.Tensor, alpha: float) -> torch.Tensor:
    """AWQ's activation-aware scale mean|X|^a, normalised to a geometric mean range of 1 (as AutoAWQ)."""
    s = act_absmean.clamp(min=1e-4).pow(alpha)
    s = s / (s.max() * s.min()).sqrt()
    return torch.where(act_absmean > 0, s, torch.ones_like(s))


def mapping_scale(st: InputStats, m: Mapping, cfg: Smooth, alpha: float, head_dim: int, use_kept: bool):
    """Per source row: the scale of strength `alpha` with the configured statistic."""
    if cfg.statistic == "mean":
        return awq_scale(reduce_groups(st.absmean_kept, m, head_dim), alpha)
    x_amax = reduce_groups(st.absmax_kept if use_kept else st.absmax, m, head_dim)
    return smoothing_scale(x_amax, reduce_groups(weight_absmax(m), m, head_dim), alpha)


@torch.no_grad()
def fold(m: Mapping, s: torch.Tensor, adapter) -> None:
    """Apply x -> x/s at the source and W -> W*s at the targets (s is per source output channel)."""
    st = expand_groups(s, m, adapter.head_dim)
    for t in m.targets:
        t.weight.mul_(st.to(t.weight.dtype))
    src = m.source
    s = s.to(src.weight.dtype)
    if m.source_kind == "norm":
        adapter.set_norm_weight(src, adapter.norm_weight(src) / s)
        if getattr(src, "bias", None) is not None:
            src.bias.div_(s)
    else:
        rows = m.source_rows or slice(0, src.weight.shape[0])
        src.weight[rows].div_(s.unsqueeze(1))
        if src.bias is not None:
            src.bias[rows].div_(s)


def output_error(m: Mapping, x: torch.Tensor, st: torch.Tensor | None, recipe, static_max,
                 keep: torch.Tensor | None, refs: list[torch.Tensor]) -> float:
    """Sum over targets of ||Q(x/s) Q(W*s)^T - x W^T||^2 on the sample rows (st None: no scaling);
    refs[k] = x W_k^T, computed once per mapping."""
    xs = x if st is None else x / st
    xq = fake_act(xs, recipe.act, static_max, keep)
    err = 0.0
    for t, ref in zip(m.targets, refs):
        w = t.weight.detach().float()
        wq = fake_weight(w if st is None else w * st, recipe.weight, recipe.ragged)
        err += (xq @ wq.t() - ref).pow(2).sum().item()
    return err


def choose_alpha(m: Mapping, st: InputStats, recipe, cfg: Smooth, head_dim: int,
                 use_kept: bool) -> float | None:
    """The alpha with the least output error (None = leave unscaled), or cfg.alpha when fixed."""
    if cfg.alpha is not None:
        return cfg.alpha
    amax_cols = st.absmax_kept if use_kept else st.absmax
    keep = st.sample_preserved if use_kept else None
    x = st.sample
    refs = [x @ t.weight.detach().float().t() for t in m.targets]
    best, best_err = None, output_error(m, x, None, recipe, amax_cols.max(), keep, refs)
    for a in cfg.alphas:
        s_cols = expand_groups(mapping_scale(st, m, cfg, a, head_dim, use_kept), m, head_dim)
        err = output_error(m, x, s_cols, recipe, (amax_cols / s_cols).max(), keep, refs)
        if err < best_err:
            best, best_err = a, err
    return best


def _online(module) -> bool:
    return any(getattr(h, "carry_over", False) for h in module._forward_pre_hooks.values())


def select_mappings(model, cfg: Smooth) -> list[Mapping]:
    ad = get_adapter(model)
    layers = cfg.layers if cfg.layers is not None else range(ad.num_layers)
    maps = [m for i in layers for m in ad.mappings(i)]
    # a target whose input is transformed on the fly (rotate's online Hadamard on down_proj) does not see
    # x/s but (x/s)H: folding there would change the function, so those mappings are left alone
    maps = [m for m in maps if not any(_online(t) for t in m.targets)]
    if cfg.mappings == "norm":
        maps = [m for m in maps if m.source_kind == "norm"]
    return maps


@torch.no_grad()
def smooth(model, calib, cfg: Smooth | None = None, recipe="w8a8-static", rule: TokenRule | None = None,
           quiet: bool = False, stats: dict[str, InputStats] | None = None) -> dict[str, float]:
    """Smooth `model` in place; returns mapping name -> alpha applied (mappings left alone are absent).

    `recipe` is what the search simulates (name or sysq.quant Recipe); `rule` the preserve-tokens rule
    whose float tokens neither set the scales nor count as quantization error.
    """
    cfg = cfg or Smooth()
    recipe = recipe_of(recipe)
    ad = get_adapter(model)
    maps = select_mappings(model, cfg)
    if stats is None:
        stats = input_stats(model, calib, {m.name: mapping_input(m) for m in maps}, rule, quiet=quiet)
    chosen = smooth_mappings(maps, stats, recipe, cfg, ad, rule)
    log.info("smooth: scaled %d of %d mappings", len(chosen), len(maps))
    cfg.chosen = dict(chosen)
    return chosen


@torch.no_grad()
def smooth_mappings(maps: list[Mapping], stats: dict[str, InputStats], recipe, cfg: Smooth, ad,
                    rule: TokenRule | None = None) -> dict[str, float]:
    """Search and fold each mapping from its input statistics; mapping name -> alpha applied."""
    names = {id(ref.module): (ref.name, ref.role) for ref in ad.linear_refs()}
    chosen = {}
    for m in maps:
        st = stats[m.name]
        # the search simulates what this mapping's linears will run (per-token scales where the plan says so)
        sim = dataclasses.replace(recipe, act=recipe.act_for(*names.get(id(mapping_input(m)), ("", ""))), dynamic_act=())
        a = choose_alpha(m, st, sim, cfg, ad.head_dim, use_kept=rule is not None)
        if a is None:
            continue
        fold(m, mapping_scale(st, m, cfg, a, ad.head_dim, use_kept=rule is not None), ad)
        chosen[m.name] = a
        log.debug("smooth %s alpha=%s", m.name, a)
    return chosen
