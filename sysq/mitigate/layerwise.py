"""mitigate() one decoder layer at a time (sysq.sequential), with the in-memory semantics kept.

In memory, mitigate() rotates the whole model, measures the smoothing statistics on the rotated model, folds
every mapping, then measures the clipping statistics on the smoothed model. Layer by layer the same happens
with two streams of calibration activations carried from layer to layer: the rotated model's (U, read by the
smoothing search) and the rotated-and-smoothed model's (S, read by the clipping search; the runner's own
stream). Layer i is rotated on the device, observed on U, smoothed, observed on S, then its weights clipped;
U and S move on through the unsmoothed / smoothed layer. On the same device and batch size this chooses
what the in-memory path chooses; the device holds one layer and the two streams.
"""
from __future__ import annotations

import logging

from tqdm.auto import tqdm

from ..arch import get_adapter
from ..sequential import Block, batches_of, on_device, run_layers
from .calib import InputStatsCollector
from .clip import activation_ratio, clip_weights
from .preserve import channels_from_report, channels_from_stats
from .qsim import recipe_of
from .rotate import rotate_layer, rotate_outside
from .smooth import mapping_input, select_mappings, smooth_mappings

log = logging.getLogger(__name__)


def observe(block: Block, modules: dict, rule, inputs, seqlen: int):
    """Input statistics of `modules` (inside the block) over `inputs`; (stats, the block's outputs)."""
    with InputStatsCollector(modules, rule) as col:
        outs = block.forward(inputs)
    return col.result(seqlen), outs


def mitigate_layers(model, p, r, sim, calib, rule, device, quiet: bool = False, report=None,
                    batch_size: int = 4) -> None:
    """Rotate, smooth and clip `model` per plan `p` (recipe `r`; `sim`: the recipe with the plan's settings, which
    the smoothing search simulates), one decoder layer at a time on `device`; fills the plan's chosen alphas, clip
    ratios and preserved channels as mitigate() does."""
    ad = get_adapter(model)
    need_channels = p.preserve_channels is not None and not p.preserve_channels.channels
    chans_from_stats = need_channels and report is None
    clip_stats = p.clip is not None or chans_from_stats
    if p.rotate:
        rotate_outside(model, p.rotate, device)
    if not p.smooth and not clip_stats:          # rotation alone reads no activations
        cache = {}
        for i, layer in enumerate(tqdm(ad.layers(), desc="mitigate", disable=quiet, leave=False)):
            with on_device(layer, device):
                if p.rotate:
                    rotate_layer(model, i, p.rotate, cache)
        if need_channels:
            p.preserve_channels.channels = channels_from_report(report, model, p.preserve_channels.per_linear)
        return
    ids = getattr(calib, "ids", calib)
    search = recipe_of(sim if sim is not None else "w8a8-static")
    maps = select_mappings(model, p.smooth) if p.smooth else []
    refs = ad.linear_refs()
    chosen_alpha, channels, rot_cache = {}, {}, {}
    unsmoothed: list = []                   # U: the rotated, unsmoothed model's activations at this layer

    def step(block: Block) -> None:
        i = block.index
        if p.rotate:
            rotate_layer(model, i, p.rotate, rot_cache)
        u_in = unsmoothed[0] if unsmoothed else block.inputs
        if p.smooth:
            layer_maps = [m for m in maps if m.layer == i]
            stats, u_out = observe(block, {m.name: mapping_input(m) for m in layer_maps}, rule, u_in, ids.shape[1])
            chosen_alpha.update(smooth_mappings(layer_maps, stats, search, p.smooth, ad, rule))
            unsmoothed[:] = [u_out]
            block.outputs = u_out
        if clip_stats:
            lin = {ref.name: ref.module for ref in refs if ref.layer == i}
            stats, block.outputs = observe(block, lin, rule, None, ids.shape[1])
            _from_stats(p, r, lin, stats, rule)
            if chans_from_stats:
                channels.update(channels_from_stats({k: s.absmax for k, s in stats.items()},
                                                    p.preserve_channels.per_linear))

    run_layers(model, batches_of(ids, batch_size), [step], device, quiet=quiet, desc="mitigate")
    if p.rotate:
        log.info("rotate: layer by layer on %s", device)
    if p.smooth:
        log.info("smooth: scaled %d of %d mappings", len(chosen_alpha), len(maps))
        p.smooth.chosen = chosen_alpha
    if chans_from_stats:
        p.preserve_channels.channels = channels
    elif need_channels:
        p.preserve_channels.channels = channels_from_report(report, model, p.preserve_channels.per_linear)


def _from_stats(p, r, linears: dict, stats: dict, rule) -> None:
    """What mitigate() decides from the clipping statistics, for some linears: clipped weights, activation
    clip ratios (recorded in p.clip.chosen)."""
    if p.clip and p.clip.weights and r is not None:
        p.clip.chosen.update({f"{k}.weight": v for k, v in clip_weights(linears, r, p.clip, stats).items()})
    if p.clip and p.clip.activations and r is not None:
        for name, mod in linears.items():
            p.clip.chosen[f"{name}.act"] = activation_ratio(stats[name], mod.weight, r, p.clip.activation_ratios,
                                                            p.clip.floor.get(name, 0.0) if rule is None else 0.0,
                                                            rule is not None)
