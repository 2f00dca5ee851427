"""Detect systematic outliers (An et al. 2025): activation, weight and attention outliers, their
consistency, their lifecycle and the tokens involved.

    report = sysq.detect(model, windows, tokenizer=tok)
    report.save("out/detect")        # report.json, report.md, plots/
"""
from __future__ import annotations

import contextlib
import functools
import gc
import logging
import time
from collections import Counter

import numpy as np
import torch
from tqdm.auto import tqdm

from ..arch import get_adapter
from ..capture import Recorder
from ..errors import SysqError
from ..sequential import choose_pipeline, run_layers
from .activation import residual_channels, round_channels, site_lists, site_summary
from .attention import attention_maps, attention_probes, attention_summary
from .consistency import feature_consistency, sequence_consistency
from .lifecycle import MAX_CHANNELS, channel_lifecycle, down_rows, groups_of
from .report import SCHEMA, OutlierReport
from .thresholds import Thresholds, parse_thresholds
from .tokens import Namer, taxonomy
from .weight import analyze_weights, start_weights

log = logging.getLogger(__name__)

__all__ = ["detect", "OutlierReport", "Thresholds", "parse_thresholds", "SCHEMA"]


def _as_ids(windows) -> tuple[torch.Tensor, dict]:
    if isinstance(windows, torch.Tensor):
        ids = windows if windows.dim() == 2 else windows[None]
        settings = {"dataset": None, "seqlen": ids.shape[1], "bos": None, "windows": ids.shape[0], "seed": None}
    elif hasattr(windows, "ids"):
        ids, settings = windows.ids, windows.settings()
    else:
        raise SysqError(f"detect needs token windows (sysq.windows(...) or a LongTensor [n, T]), got {type(windows)}")
    if ids.numel() == 0:
        raise SysqError("detect got no windows; pass at least one window of tokens")
    return ids.long(), settings


def _gc_paused(fn):
    """Run fn with Python's cyclic garbage collector paused (restored after, as the caller had it). detect makes
    enough small containers (records, site summaries) for 35-40 of the collector's young collections a run, and now
    and then a full one over every object the process holds: ~0.2 s beside torch and transformers on the CPU machine
    (scripts/bench_detect_gc.py), as long as the detection pass of an 8B model on an H200. Reference counting
    frees detect's objects as before; the collector runs again once detect returns."""
    @functools.wraps(fn)
    def paused(*args, **kwargs):
        was = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was:
                gc.enable()
    return paused


@_gc_paused
def detect(model, windows, tokenizer=None, thresholds=None, quiet: bool = False, batch_size: int = 4,
           attention: bool = True, attention_windows: int | None = 8, snapshot: bool = True,
           pipeline: str = "auto", device=None) -> OutlierReport:
    """Stream the windows through the model and report its systematic outliers.

    thresholds: a Thresholds or a dict of overrides. attention=False skips the attention statistics
    (attention outliers, sequence consistency, Q/K/V norms) and runs the model's own attention kernel.
    attention_windows: how many windows (the first ones) the attention statistics use (None: all).
    snapshot=True keeps |h| of the first window's first tokens at every layer for the emergence heat map.
    pipeline: "auto" | "memory" | "sequential" (sysq.sequential: one decoder layer at a time on `device`);
    the report is the same either way.
    """
    th = Thresholds.from_dict(thresholds)
    ad = get_adapter(model)
    ids, settings = _as_ids(windows)
    path = choose_pipeline(model, pipeline, device)
    log.info("detect: %s", path)

    # The attention statistics need eager attention's probabilities or sysq.attention_mass (attention_probes): only
    # the first `attention_windows` windows pay for them; every window feeds the activation statistics.
    n_att = 0 if not attention else len(ids) if attention_windows is None else min(attention_windows, len(ids))
    # batches never straddle the attention boundary
    starts = list(range(0, n_att, batch_size)) + list(range(n_att, len(ids), batch_size))
    ends = [min(s + batch_size, n_att if s < n_att else len(ids)) for s in starts]
    rec = Recorder(model, th, attention=attention, snapshot=snapshot)
    t_weights, weights_done = 0.0, None
    t0 = time.perf_counter()
    if path.sequential:
        weights = _detect_sequential(model, ad, th, rec, ids, starts, ends, n_att, path.device, quiet)
        statistics_done = _start_statistics(rec)
    else:
        bar = tqdm(total=len(ids), disable=quiet, desc="detect", unit="window")
        rec.attach()
        try:
            for s, e in zip(starts, ends):
                with (attention_probes(model) if s < n_att else contextlib.nullcontext()):
                    rec.run(ids[s:e], s, attention=s < n_att)
                bar.update(e - s)
                if weights_done is None:
                    # the weights' kernels queued behind the first batch: on an accelerator the host launches
                    # them while the device still computes that batch, not while the device waits
                    t1 = time.perf_counter()
                    weights_done = start_weights(ad, th)
                    t_weights = time.perf_counter() - t1
            # the statistics are final once the last batch's merges are queued: their rounding and copy are queued
            # behind them, and the host builds the weights' statistics and the last batch's records meanwhile
            statistics_done = _start_statistics(rec)
            t1 = time.perf_counter()
            weights = weights_done()
            t_weights += time.perf_counter() - t1
            rec.flush()                 # the last batch's records
        finally:
            rec.detach()
            bar.close()
    statistics_done()
    site_lists(list(rec.tables.values()))
    if rec.chunks:
        log.info("detect: %d chunks of up to %d layers reduced together (up to %.2f GiB of activations held; "
                 "sysq.capture.CHUNK_BYTES)", len(rec.chunks), max(n for n, _ in rec.chunks),
                 max(b for _, b in rec.chunks) / 2**30)
    t_pass = time.perf_counter() - t0 - (0.0 if path.sequential else t_weights)

    namer = Namer(tokenizer)
    sites = {key: site_summary(s, rec.site_linears.get(key, []), namer, th) for key, s in sorted(rec.sites.items())}
    linear_inputs = {name: s for s in sites.values() for name in s["linears"]}
    resid = [sites[(i, "resid")] for i in range(ad.num_layers) if (i, "resid") in sites]
    channels = residual_channels(resid, ad.num_layers)

    down_names = {ref.layer: ref.name for ref in ad.linear_refs() if ref.role in ("down", "fc2")}
    down_cols = [set(weights[down_names[i]]["outlier_columns"]) for i in range(ad.num_layers)]
    down_act = [{m["channel"] for m in sites[(i, "down_in")]["massive_channels"]} for i in range(ad.num_layers)]
    resid_absmax = [s["channel_absmax"] for s in resid]
    rows = down_rows([ad.down(i).weight for i in range(ad.num_layers)], rec.life,
                     [d["channel"] for d in channels[:MAX_CHANNELS]])
    lifecycle = [channel_lifecycle(d["channel"], g, rec.life, resid_absmax, d["layers"], rows, down_cols, down_act)
                 for d in channels[:MAX_CHANNELS] for g in groups_of(d["channel"], rec.life)]

    consistency = {"feature": feature_consistency(sites, weights)}
    attn = attention_summary(rec, namer, th) if n_att else {"layers": [], "sink_eps": None}
    attn["windows"] = n_att
    if n_att:
        consistency["sequence"] = sequence_consistency(rec.seq)
    tokens = _outlier_tokens(rec, namer)

    report = OutlierReport(
        model={"name": getattr(model.config, "name_or_path", None) or getattr(model.config, "_name_or_path", None),
               "family": ad.name, "model_type": model.config.model_type, "layers": ad.num_layers,
               "hidden_size": ad.hidden_size, "heads": ad.num_heads, "kv_heads": ad.num_kv_heads,
               "dtype": str(next(model.parameters()).dtype).replace("torch.", "")},
        data=settings, thresholds=th.to_dict(), summary={},
        activation={"sites": list(sites.values()), "residual_channels": channels},
        linear_inputs=linear_inputs, weights=weights, attention=attn, consistency=consistency,
        lifecycle=lifecycle, tokens=tokens,
        cost={"weights_s": t_weights, "pass_s": t_pass, "batch_size": batch_size, "attention_windows": n_att,
              "pipeline": path.kind, "device": str(path.device),
              # the largest chunk of layers reduced together (capture.CHUNK_BYTES) and the activations it held
              "chunk_layers": max((n for n, _ in rec.chunks), default=0),
              "chunk_bytes": max((b for _, b in rec.chunks), default=0)},
    )
    report.summary = _summary(report)
    report.arrays = _arrays(rec, resid, namer, ad, report)
    return report


def _start_statistics(rec: Recorder):
    """The per-channel lists rounded on the device and every running statistic's copy to the host, queued; the
    returned function waits for the copy."""
    round_channels(list(rec.tables.values()))
    return rec.start_to_host()


def _detect_sequential(model, ad, th, rec: Recorder, ids, starts, ends, n_att, device, quiet) -> dict:
    """detect through sysq.sequential: every batch passes layer i (hooked) before layer i + 1 is on the device;
    the weight statistics are taken on the device, layer by layer. Returns them."""
    batches = [rec.begin(ids[s:e], s, attention=s < n_att) for s, e in zip(starts, ends)]
    weights = {}

    @contextlib.contextmanager
    def context(b):
        rec.use(batches[b])
        with (attention_probes(model, device) if starts[b] < n_att else contextlib.nullcontext()):
            yield

    def step(block):
        weights.update(analyze_weights(ad, th, layers=[block.index]))
        rec.attach([block.index])
        try:
            block.outputs = block.forward()
        finally:
            rec.detach()
        rec.flush()

    run_layers(model, [ids[s:e] for s, e in zip(starts, ends)], [step], device,
               context=context, read_only=True, quiet=quiet, desc="detect")
    return weights


def _outlier_tokens(rec: Recorder, namer: Namer) -> dict:
    """Tokens flagged by the PrefixQuant criterion (token max / median token max > 64) at any linear
    input or the residual, merged over layers: what preserve-token mitigation keeps in high precision."""
    per_token: dict[tuple[int, bool], dict] = {}
    positions = Counter()
    merged = None
    for (layer, site), s in rec.sites.items():
        h = s.hits["token_ratio"]
        if merged is None:
            merged = type(h)()
        merged.count += h.count
        merged.ids.update(h.ids)
        merged.initial_ids.update(h.initial_ids)
        positions.update(h.positions)
        for initial, counter in ((True, h.initial_ids), (False, h.ids)):
            for tid, n in counter.items():
                d = per_token.setdefault((tid, initial), {"token_id": tid, "token": namer.text(tid),
                                                          "type": "initial" if initial else namer.type(tid, 1),
                                                          "count": 0, "layers": set(), "sites": set()})
                d["count"] += n
                d["layers"].add(layer)
                d["sites"].add(site)
    rows = sorted(per_token.values(), key=lambda d: -d["count"])
    for d in rows:
        d["layers"], d["sites"] = sorted(d["layers"]), sorted(d["sites"])
    merged.positions = positions
    return {"criterion": "token_ratio (token max / median token max > token_ratio) at any linear input or residual",
            "unit": "(layer, site, window, position) hits", "tokens": rows[:64],
            "positions": [{"pos": p, "count": n} for p, n in positions.most_common(16)],
            "taxonomy": taxonomy(merged, namer) if merged else None}


def _summary(r: OutlierReport) -> dict:
    chans = r.activation["residual_channels"]
    dom = chans[0] if chans else None
    life = r.lifecycle[0] if r.lifecycle else None
    feat, seq = r.consistency["feature"], r.consistency.get("sequence")
    return {
        "dominant_channels": [{k: d[k] for k in ("channel", "absmax", "value", "at_layer", "layer_range", "token",
                                                 "persistent")} | {"layers": len(d["layers"])} for d in chans[:3]],
        "dominant_channel": dom["channel"] if dom else None,
        "magnitude": dom["absmax"] if dom else None,
        "emergence_layer": life["emergence_layer"] if life else None,
        "emergence_columns": _builders(life["emergence"]) if life else [],
        "amplification_layers": [a["layer"] for a in life["amplifications"]] if life else [],
        "amplification_columns": [{"layer": a["layer"], "columns": _builders(a)} for a in life["amplifications"]]
        if life else [],
        "massive_layers": life["massive_layers"] if life else [],
        "vanishing_layers": [v["layer"] for v in life["vanishing"]] if life else [],
        "feature_consistency": feat["act_to_weight"], "feature_consistency_reverse": feat["weight_to_act"],
        "sequence_consistency": seq["act_to_attn"] if seq else None,
        "sequence_consistency_reverse": seq["attn_to_act"] if seq else None,
        "sink_eps": r.attention.get("sink_eps"),
        "token_taxonomy": (r.tokens.get("taxonomy") or {}).get("share"),
        "nonfinite": False,
    }


def _builders(birth: dict | None, share: float = 0.1) -> list[int]:
    """The down_proj columns whose term x_k * W_down[c, k] is at least `share` of the MLP's write."""
    if not birth:
        return []
    return [t["column"] for t in birth["terms"] if abs(t["contribution"]) >= share * abs(birth["mlp"])]


def _arrays(rec: Recorder, resid: list[dict], namer: Namer, ad, report: OutlierReport) -> dict:
    """Small arrays for the plots (never in report.json)."""
    arrays = {
        "resid_absmax": torch.from_numpy(np.stack([s["channel_absmax"] for s in resid])).float(),
        "resid_top3": torch.tensor([s["top3_mean"] for s in resid]),
        "resid_median": torch.tensor([s["median_abs"] for s in resid]),
        "attn_maps": attention_maps(rec),
        "map_tokens": [namer.text(t) for t in (rec.window0_ids.tolist() if rec.window0_ids is not None else [])],
    }
    life = report.lifecycle[0] if report.lifecycle else None
    if life and life["massive_layers"] and life["massive_layers"][0] in rec.snapshots:
        layer = life["massive_layers"][0]
        arrays["snapshot"] = (layer, rec.snapshots[layer].cpu())
    if life and life["emergence"] and life["emergence"]["terms"]:
        layer, row, col = life["emergence_layer"], life["channel"], life["emergence"]["terms"][0]["column"]
        w = ad.down(layer).weight.detach()
        rlo, lo = max(0, row - 24), max(0, col - 12)      # the block the plot shows, not the whole matrix
        arrays["down_column"] = (layer, row, col, w[rlo:row + 25, lo:col + 13].float().cpu().clone(), rlo, lo)
    return arrays
