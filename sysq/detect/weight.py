"""Weight outliers: per input column j of each linear, max_i |W_ij| / mean_i |W_ij| (An et al.).

A column is a weight-outlier column when its ratio is >= `weight_ratio` x the linear's median column
ratio (random-like columns sit near the median; the columns that build systematic outliers are
10-50x above it). The rows view: for each top column, the output rows where it is largest.
"""
from __future__ import annotations

import torch

from ..arch import Adapter
from .thresholds import Thresholds

TOP_COLUMNS = 8
TOP_ROWS = 3


def column_ratio(weight: torch.Tensor) -> torch.Tensor:
    """max_i |W_ij| / mean_i |W_ij| for every input column j of W [out, in]."""
    w = weight.detach().float().abs()
    return w.amax(0) / w.mean(0).clamp_min(1e-12)


def linear_weight_stats(weight: torch.Tensor, th: Thresholds) -> dict:
    ratio = column_ratio(weight)
    med = float(ratio.median())
    k = min(TOP_COLUMNS, ratio.numel())
    top = ratio.topk(k)
    w = weight.detach().float()
    cols = []
    for v, j in zip(top.values.tolist(), top.indices.tolist()):
        col = w[:, j]
        rows = col.abs().topk(min(TOP_ROWS, col.numel())).indices.tolist()
        cols.append({"column": j, "ratio": v, "rows": rows, "row_values": [float(col[r]) for r in rows]})
    outliers = (ratio >= th.weight_ratio * med).nonzero().flatten().tolist()
    return {"median_ratio": med, "max_ratio": float(ratio.max()), "top_columns": cols, "outlier_columns": outliers,
            "outlier_rows": [int(w[:, j].abs().argmax()) for j in outliers]}


def analyze_weights(ad: Adapter, th: Thresholds, layers=None) -> dict:
    """Weight statistics of every decoder linear (or those of `layers`), keyed by its dotted name."""
    return {ref.name: {"layer": ref.layer, "role": ref.role, **linear_weight_stats(ref.module.weight, th)}
            for ref in ad.linear_refs() if layers is None or ref.layer in layers}
