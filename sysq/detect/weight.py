"""Weight outliers: per input column j of each linear, max_i |W_ij| / mean_i |W_ij| (An et al.).

A column is a weight-outlier column when its ratio is >= `weight_ratio` x the linear's median column
ratio (random-like columns sit near the median; the columns that build systematic outliers are
10-50x above it). The rows view: for each top column, the output rows where it is largest.
"""
from __future__ import annotations

import torch

from ..arch import Adapter
from ..capture import to_host
from .thresholds import Thresholds

TOP_COLUMNS = 8
TOP_ROWS = 3


def _on_device(weight: torch.Tensor) -> list[torch.Tensor]:
    """What the statistics need, reduced where the weight is: column ratios, the top columns (whole), the row
    holding each column's largest |W|. A bf16 weight is not copied to float32 whole (maxima are exact in bf16, the
    mean accumulates in float32)."""
    w = weight.detach()
    a = w.abs()
    ratio = a.amax(0).float() / a.mean(0, dtype=torch.float32).clamp_min(1e-12)
    top = ratio.topk(min(TOP_COLUMNS, ratio.numel()))
    return [ratio, top.values, top.indices, w[:, top.indices].float(), a.argmax(0)]


def _stats_on_host(th: Thresholds, ratio, top_values, top_indices, top_cols, col_argmax) -> dict:
    med = float(ratio.median())
    cols = []
    for k, (v, j) in enumerate(zip(top_values.tolist(), top_indices.tolist())):
        col = top_cols[:, k]
        rows = col.abs().topk(min(TOP_ROWS, col.numel())).indices.tolist()
        cols.append({"column": j, "ratio": v, "rows": rows, "row_values": [float(col[r]) for r in rows]})
    outliers = (ratio >= th.weight_ratio * med).nonzero().flatten().tolist()
    return {"median_ratio": med, "max_ratio": float(ratio.max()), "top_columns": cols, "outlier_columns": outliers,
            "outlier_rows": col_argmax[outliers].tolist()}


def analyze_weights(ad: Adapter, th: Thresholds, layers=None) -> dict:
    """Weight statistics of every decoder linear (or those of `layers`), keyed by its dotted name; what each
    linear's statistics need comes to the host in one copy for all of them."""
    refs = [ref for ref in ad.linear_refs() if layers is None or ref.layer in layers]
    parts = [_on_device(ref.module.weight) for ref in refs]
    host = iter(to_host([t for p in parts for t in p]))
    return {ref.name: {"layer": ref.layer, "role": ref.role, **_stats_on_host(th, *[next(host) for _ in p])}
            for ref, p in zip(refs, parts)}
