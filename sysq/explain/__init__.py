"""Explain systematic outliers by intervention (An et al. 2025's causal claims, each tested against a control).

    report = sysq.detect(model, windows, tokenizer=tok)
    ex = sysq.explain(model, windows, report)      # ExplainReport; ex.save("out/explain")

Interventions, chosen from the detect report and run on the same windows, each beside its control:
  ablate         weight -> activation: the down_proj columns that build the dominant channel where it first
                 becomes massive (ablate-born: those of the layer where it is born), vs random columns (ablate.py)
  clamp          the dominant channels clamped at the outlier tokens in the residual stream, vs random channels
  mask-keys      the outlier tokens hidden as keys (their attention role gone, the activation kept), vs random tokens
  bias           the anchor as an explicit attention bias: its fixed float keys/values, the token itself removed
and, on the unmodified model, sinks per layer (sinks.py) and minimal updates (updates.py). Influence on the
other tokens (hidden states, KL, perplexity) is measured for every intervention (influence.py).
"""
from __future__ import annotations

import logging
import time

import torch
from tqdm.auto import tqdm

from ..arch import get_adapter
from ..detect import _as_ids, detect
from ..detect.attention import eager_attention
from ..detect.thresholds import Thresholds
from ..errors import SysqError
from .ablate import MODES, ablated, ablated_at, ablation_summary
from .bias import AnchorBias, bias_summary
from .influence import influence_summary, masked_keys, random_keys
from .report import ExplainReport
from .sinks import clamped, sink_summary
from .targets import Targets, choose_targets
from .trace import RunStats, Trace
from .updates import update_summary

log = logging.getLogger(__name__)

UPDATE_RUNS = ("baseline", "ablate", "ablate-anchors", "clamp", "bias")     # runs whose minimal-update statistics are kept

__all__ = ["explain", "ExplainReport", "AnchorBias", "Targets", "choose_targets"]


def explain(model, windows, report=None, tokenizer=None, mode: str = "zero", seed: int = 0, batch_size: int = 2,
            quiet: bool = False) -> ExplainReport:
    """Run the interventions on `windows` and measure them against the unmodified model.

    report: the detect report of this model (None: detect runs on the same windows first). mode: how columns
    are ablated ("zero" or "shrink"). seed: the random controls. On a model without a dominant outlier the
    ablation and clamp are skipped (the report says why); key masking and the anchor bias use position 0.
    """
    if mode not in MODES:
        raise SysqError(f"unknown ablation mode {mode!r}; use one of {', '.join(MODES)}")
    ids, settings = _as_ids(windows)
    if report is None:
        report = detect(model, windows, tokenizer=tokenizer, quiet=quiet)
    th = Thresholds.from_dict(report.thresholds)
    ad = get_adapter(model)
    t = choose_targets(report, ad, seed)
    device = next(model.parameters()).device
    interventions = _interventions(ad, t, mode, seed)
    causal = ad.family.task == "causal-lm"
    notes = [t.reason] if t.reason else []
    if not causal:
        notes.append("encoder (masked LM): the first token sees the whole sequence, so its keys and values are not a "
                     "fixed bias (no anchor-bias run), and influence is measured as KL at each position (no "
                     "perplexity on unmasked text)")
    fixed_first = bool((ids[:, 0] == ids[0, 0]).all())
    if causal and not fixed_first:
        notes.append("the windows do not share their first token: no anchor-bias run")
    bias_model = AnchorBias(model, ids[0, :1].to(device)) if causal and fixed_first else None
    k = len(t.channels)
    names = ["baseline"] + list(interventions) + (["bias"] if bias_model is not None else [])
    runs = {n: RunStats(ad.num_layers, ad.num_heads, k, samples=n in UPDATE_RUNS, causal=causal) for n in names}
    fidelity = {"max_diff": 0.0, "scale": 0.0}
    anchor_count = 0
    t0 = time.perf_counter()
    bar = tqdm(total=len(ids), disable=quiet, desc="explain", unit="window")
    for start in range(0, len(ids), batch_size):
        batch = ids[start:start + batch_size].to(device)
        anchors = _anchors(model, batch, th, t)
        anchor_count += int(anchors.sum())
        with eager_attention(model), torch.no_grad():
            base, base_logits = _pass(model, lambda: model(input_ids=batch, use_cache=False).logits, th, t, anchors)
            runs["baseline"].add(base, anchors, base_logits, batch.cpu())
            for name, (make, _) in interventions.items():
                log.info("explain: %s on windows %d-%d", name, start, start + len(batch) - 1)
                with make(anchors):
                    layers, logits = _pass(model, lambda: model(input_ids=batch, use_cache=False).logits, th, t,
                                           anchors)
                runs[name].add(layers, anchors, logits, batch.cpu(), base, base_logits)
            if bias_model is not None:
                layers, logits = _pass(model, lambda: bias_model(batch).logits, th, t, anchors[:, 1:])
                shifted = [_shift(lay) for lay in base]
                runs["bias"].add(layers, anchors[:, 1:], logits, batch.cpu(), shifted, base_logits,
                                 logit_anchors=anchors)
                fidelity["max_diff"] = max(fidelity["max_diff"], float((logits - base_logits).abs().max()))
                fidelity["scale"] = max(fidelity["scale"], float(base_logits.abs().max()))
        bar.update(len(batch))
    bar.close()
    return _report(model, report, settings, th, t, mode, runs, interventions, bias_model, fidelity,
                   anchor_count, ids, time.perf_counter() - t0, notes)


def _interventions(ad, t: Targets, mode: str, seed: int) -> dict:
    """name -> (context factory taking the batch's anchors, description)."""
    out = {}
    if t.massive_columns:
        out["ablate"] = (lambda a: ablated(ad, t.massive_layer, t.massive_columns, mode),
                         f"{mode} down_proj columns {t.massive_columns} of layer {t.massive_layer} (builders where "
                         f"channel {t.channel} first becomes massive)")
        out["ablate-control"] = (lambda a: ablated(ad, t.massive_layer, t.controls["ablate"], mode),
                                 f"{mode} random down_proj columns {t.controls['ablate']} of layer {t.massive_layer}")
        out["ablate-anchors"] = (lambda a: ablated_at(ad, t.massive_layer, t.massive_columns, a),
                                 f"zero the inputs of those columns at the outlier tokens only (layer {t.massive_layer})")
        out["ablate-anchors-control"] = (lambda a: ablated_at(ad, t.massive_layer, t.controls["ablate"], a),
                                         f"zero the inputs of the random columns {t.controls['ablate']} at the "
                                         "outlier tokens only")
    if "ablate-born" in t.controls:
        out["ablate-born"] = (lambda a: ablated(ad, t.born_layer, t.born_columns, mode),
                              f"{mode} down_proj columns {t.born_columns} of layer {t.born_layer} (builders where "
                              f"channel {t.channel} is born, |h| > massive_abs)")
        out["ablate-born-control"] = (lambda a: ablated(ad, t.born_layer, t.controls["ablate-born"], mode),
                                      f"{mode} random down_proj columns {t.controls['ablate-born']} of layer "
                                      f"{t.born_layer}")
    if t.channels:
        out["clamp"] = (lambda a: clamped(ad, t.channels, a),
                        f"clamp channels {t.channels} at the outlier tokens, every layer, to the largest |h| of the "
                        "channel at the window's other tokens")
        out["clamp-control"] = (lambda a: clamped(ad, t.controls["clamp"], a),
                                f"clamp random channels {t.controls['clamp']} at the outlier tokens the same way")
    g = torch.Generator().manual_seed(seed + 1)
    out["mask-keys"] = (lambda a: masked_keys(ad, a), "hide the outlier tokens as keys in every layer (each "
                        "still attends to itself); the activation stays")
    out["mask-keys-control"] = (lambda a: masked_keys(ad, random_keys(a, g)),
                                "hide as many random ordinary tokens as keys in every layer")
    return out


@torch.no_grad()
def _anchors(model, batch, th, t: Targets) -> torch.Tensor:
    """[B, T] the outlier tokens of each window: the tokens that pass the massive test at any layer of the
    unmodified model, and position 0 when the report's outlier tokens are initial (or when there is no outlier:
    then position 0, where attention sinks form, stands in)."""
    with Trace(model, th, [], attention=False) as tr:
        getattr(model, "base_model", model)(input_ids=batch, use_cache=False)
    anchors = torch.zeros(batch.shape, dtype=torch.bool)
    for lay in tr.layers:
        anchors |= lay.massive
    if t.initial or t.reason or not anchors.any():
        anchors[:, 0] = True
    return anchors


def _pass(model, run, th, t: Targets, anchors):
    with Trace(model, th, t.channels, anchors, hidden=True) as tr:
        logits = run()
    return tr.layers, logits.float().cpu()


def _brief(u: dict, t: Targets) -> dict:
    """One line of minimal-update numbers per run, over the layers after the first massive layer."""
    after = t.massive_layer if t.massive_layer is not None else -1
    rows = [r for r in u["layers"] if r["layer"] > after]
    mean = lambda xs: sum(xs) / len(xs) if xs else None   # noqa: E731
    return {"layers_from": after + 1, "median_spearman": u["median_spearman"],
            "median_high_low_ratio": u["median_high_low_ratio"],
            "mean_norm_mass_ge_0.9": mean([r["mean_norm_mass_ge_0.9"] for r in rows if r["mean_norm_mass_ge_0.9"]]),
            "mean_norm_mass_lt_0.1": mean([r["mean_norm_mass_lt_0.1"] for r in rows if r["mean_norm_mass_lt_0.1"]]),
            "anchor_write": mean([sum(r["anchor_write"]) / len(r["anchor_write"]) for r in rows if r["anchor_write"]]),
            "share_mass_ge_0.9": mean([r["share_mass_ge_0.9"] for r in rows])}


def _shift(lay):
    """A baseline layer in the anchor-bias model's coordinates (the first token dropped), for comparisons."""
    from dataclasses import replace
    return replace(lay, hidden=lay.hidden[:, 1:])


def _report(model, report, settings, th, t, mode, runs, interventions, bias_model, fidelity, anchor_count, ids,
            seconds, notes) -> ExplainReport:
    ad = get_adapter(model)
    ablation = {}
    for name, layer, cols, ctl in (("ablate", t.massive_layer, t.massive_columns, "ablate"),
                                   ("ablate-anchors", t.massive_layer, t.massive_columns, "ablate"),
                                   ("ablate-born", t.born_layer, t.born_columns, "ablate-born")):
        if name in interventions:
            ablation[name] = ablation_summary(runs, layer, cols, t.controls[ctl], 0, name=name)
    sink_runs = ["baseline"] + [n for n in interventions if not n.startswith("mask-keys")]
    names = list(interventions) + (["bias"] if "bias" in runs else [])
    ex = ExplainReport(
        model=report.model | {"name": report.model.get("name")}, data=settings, thresholds=th.to_dict(),
        mode=mode, targets=t.to_dict(),
        anchors={"tokens": anchor_count, "windows": len(ids),
                 "rule": "tokens that pass the massive test at any layer of the unmodified model"
                         + (", and position 0" if t.initial or t.reason else "")},
        runs={"baseline": "the unmodified model"} | {n: d for n, (_, d) in interventions.items()}
        | ({"bias": "the anchor token removed, its float keys/values at every layer injected as a fixed prefix"}
           if bias_model is not None else {}),
        ablation=ablation, sinks=sink_summary(runs, th.sink_eps, sink_runs,
                                              t.massive_layer if t.massive_layer is not None else -1),
        influence=influence_summary(runs, names), updates=update_summary(runs["baseline"]),
        updates_by_run={n: _brief(update_summary(runs[n]), t) for n in UPDATE_RUNS if n in runs},
        bias=bias_summary(runs, fidelity["max_diff"], fidelity["scale"], bias_model.prefix.tolist())
        if bias_model is not None else None,
        notes=notes,
        cost={"seconds": seconds, "windows": len(ids), "passes_per_batch": 2 + len(names)},
    )
    ex.arrays["samples"] = runs["baseline"].samples
    ex.headline = ex.findings()
    log.info("explain: %s", " | ".join(ex.headline))
    return ex
