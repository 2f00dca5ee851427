"""Weight outliers: per input column j of each linear, max_i |W_ij| / mean_i |W_ij| (An et al.).

A column is a weight-outlier column when its ratio is >= `weight_ratio` x the linear's median column
ratio (random-like columns sit near the median; the columns that build systematic outliers are
10-50x above it). The rows view: for each top column, the output rows where it is largest.

Where the work happens: a few kernels per linear on its device (the column ratios, the top columns, the row of
each column's largest |W|), one copy of all of them to the host, then numpy (and one topk per output size for
the rows of the top columns): no read of a single value from a device.
"""
from __future__ import annotations

import numpy as np
import torch

from ..arch import Adapter
from ..capture import to_host
from .thresholds import Thresholds

TOP_COLUMNS = 8
TOP_ROWS = 3


def _on_device(weight: torch.Tensor) -> list[torch.Tensor]:
    """What the statistics need, reduced where the weight is: column ratios, the top columns (whole, [k, out], in
    float32), the row holding each column's largest |W|. A bf16 weight is not copied to float32 whole (maxima are exact in bf16,
    the mean accumulates in float32; bf16 / float32 divides in float32)."""
    w = weight.detach()
    a = w.abs()
    ratio = a.amax(0) / a.mean(0, dtype=torch.float32).clamp_min(1e-12)
    top = ratio.topk(min(TOP_COLUMNS, ratio.numel()))
    return [ratio, top.values, top.indices, w.t()[top.indices].float(), a.argmax(0)]


def _median(r: np.ndarray) -> float:
    """torch.median's: the lower of the two middle values, NaN when there is one."""
    if np.isnan(r).any():
        return float("nan")
    k = (r.size - 1) // 2
    return float(np.partition(r, k)[k])


def _top_rows(cols: list[np.ndarray]) -> list[tuple[list, list]]:
    """For each [k, out] block of top columns (host, float32): each column's TOP_ROWS rows of largest |W| and the values
    there; one topk per output size (a row of a 2-D topk is ordered as the 1-D topk of that row)."""
    out: list = [None] * len(cols)
    by_rows: dict[int, list[int]] = {}
    for n, c in enumerate(cols):
        by_rows.setdefault(c.shape[1], []).append(n)
    for rows, members in by_rows.items():
        block = torch.from_numpy(np.concatenate([cols[n] for n in members]))     # [sum k, out]
        idx = block.abs().topk(min(TOP_ROWS, rows), dim=-1).indices
        idx_l, val_l = idx.tolist(), block.gather(1, idx).tolist()
        at = 0
        for n in members:
            k = cols[n].shape[0]
            out[n] = (idx_l[at:at + k], val_l[at:at + k])
            at += k
    return out


def _stats_on_host(th: Thresholds, r, top_values, top_indices, rows, col_argmax) -> dict:
    med = _median(r)
    cols = [{"column": j, "ratio": v, "rows": rw, "row_values": rv}
            for v, j, rw, rv in zip(top_values.tolist(), top_indices.tolist(), *rows)]
    # compared in the ratios' dtype, as torch compares a tensor with a Python float
    outliers = np.flatnonzero(r >= r.dtype.type(th.weight_ratio * med)).tolist()
    return {"median_ratio": med, "max_ratio": float(r.max()), "top_columns": cols, "outlier_columns": outliers,
            "outlier_rows": col_argmax[outliers].tolist()}


def analyze_weights(ad: Adapter, th: Thresholds, layers=None) -> dict:
    """Weight statistics of every decoder linear (or those of `layers`), keyed by its dotted name; what each
    linear's statistics need comes to the host in one copy for all of them."""
    refs = [ref for ref in ad.linear_refs() if layers is None or ref.layer in layers]
    parts = [_on_device(ref.module.weight) for ref in refs]
    host = iter(to_host([t for p in parts for t in p], numpy=True))
    parts = [[next(host) for _ in p] for p in parts]
    rows = _top_rows([p[3] for p in parts])
    return {ref.name: {"layer": ref.layer, "role": ref.role,
                       **_stats_on_host(th, p[0], p[1], p[2], rw, p[4])} for ref, p, rw in zip(refs, parts, rows)}
