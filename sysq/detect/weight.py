"""Weight outliers: per input column j of each linear, max_i |W_ij| / mean_i |W_ij| (An et al.).

A column is a weight-outlier column when its ratio is >= `weight_ratio` x the linear's median column
ratio (random-like columns sit near the median; the columns that build systematic outliers are
10-50x above it). The rows view: for each top column, the output rows where it is largest.

Where the work happens: a few kernels per group of linears on their device (the column ratios, the top columns and
their largest rows, the row of each column's largest |W|), one copy of all of them to the host, then numpy: no read
of a single value from a device, and little host work once the forward passes are done. start_weights queues the device
work and the copy without waiting (detect overlaps it with the forward passes).
"""
from __future__ import annotations

import numpy as np
import torch

from ..arch import Adapter
from ..capture import column_stats, fused, nonzero, start_to_host
from .thresholds import Thresholds

TOP_COLUMNS = 8
TOP_ROWS = 3


# weights of one shape reduced per pass: a few kernels for many linears (an 8B model: 16 passes), bounded memory in the
# torch form (the stack, |W| and its float64 column sums: about 4x this while a pass runs)
CHUNK_BYTES = 2**30


def _on_device(ws: list[torch.Tensor]) -> list[torch.Tensor]:
    """What the statistics of k linears of one shape need, reduced where the weights are: column ratios [k, in]
    (max |W| over the column / its mean, the mean added in float64 and rounded once to float32: the same digits in
    any order, on any device), the top columns (values, indices, and their TOP_ROWS rows of largest |W| and the
    values there, [k, TOP_COLUMNS, TOP_ROWS]), the row holding each column's largest |W| [k, in] (the first on
    ties). On CUDA the fused pass reads each weight in place (one launch each) and the top columns are gathered
    weight by weight: stacking them first copied every weight of the model once, 6.7 ms of an 8B detect's 11.2 ms
    of weight kernels on one H200 (call A18, scripts/h200_session18/device_sections.py). Elsewhere whole-tensor
    kernels over the stack (a copy in the weights' dtype: a bf16 weight is never copied to float32 whole)."""
    rows = ws[0].shape[0]
    if fused(ws[0].device):
        amax, argmax, total = (v.squeeze(1) for v in column_stats([w[None] for w in ws]))
    else:
        a = torch.stack(ws).abs()
        (amax, argmax), total = a.max(1), a.sum(1, dtype=torch.float64)
        del a
    ratio = amax / (total / rows).float().clamp_min(1e-12)
    top = ratio.topk(min(TOP_COLUMNS, ratio.shape[-1]), dim=-1)
    cols = torch.stack([w.index_select(1, i) for w, i in zip(ws, top.indices.unbind(0))]).transpose(1, 2).float()
    # each top column's TOP_ROWS rows of largest |W| (the first row on ties: one int64 key per row, |W|'s float32
    # bits above 2^32 - 1 - row, so any device's topk orders them alike) and the values there
    rev = torch.arange(2**32 - 1, 2**32 - 1 - rows, -1, device=cols.device)
    key = cols.abs().view(torch.int32).long().mul_(2**32).add_(rev)
    idx = key.topk(min(TOP_ROWS, rows), dim=-1).indices                     # [k, TOP_COLUMNS, TOP_ROWS]
    return [ratio, top.values, top.indices, idx, cols.gather(-1, idx), argmax]


def _stats_on_host(th: Thresholds, r, top_values, top_indices, rows, row_values, col_argmax) -> list[dict]:
    """The statistics of k linears of one shape from their host arrays ([k, in] ratios and argmax rows, [k, TOP_COLUMNS]
    top columns, [k, TOP_COLUMNS, TOP_ROWS] their rows and values), each row's reductions done for all k at once."""
    n = r.shape[1]
    # torch.median's median: the lower of the two middle values, NaN where a ratio is NaN
    med = np.partition(r, (n - 1) // 2, axis=1)[:, (n - 1) // 2].astype(np.float64)
    med[np.isnan(r).any(1)] = np.nan
    # compared in the ratios' dtype, as torch compares a tensor with a Python float
    hit_k, hit_j = nonzero(r >= (th.weight_ratio * med).astype(r.dtype)[:, None])
    ends = np.searchsorted(hit_k, np.arange(len(r) + 1)).tolist()
    hit_j, hit_rows = hit_j.tolist(), col_argmax[hit_k, hit_j].tolist()
    top_v, top_i, top_r, top_rv = (a.tolist() for a in (top_values, top_indices, rows, row_values))
    out = []
    for k, (m, mx) in enumerate(zip(med.tolist(), r.max(1).tolist())):
        cols = [{"column": j, "ratio": v, "rows": rw, "row_values": rv}
                for v, j, rw, rv in zip(top_v[k], top_i[k], top_r[k], top_rv[k])]
        out.append({"median_ratio": m, "max_ratio": mx, "top_columns": cols,
                    "outlier_columns": hit_j[ends[k]:ends[k + 1]], "outlier_rows": hit_rows[ends[k]:ends[k + 1]]})
    return out


def analyze_weights(ad: Adapter, th: Thresholds, layers=None) -> dict:
    """Weight statistics of every decoder linear (or those of `layers`), keyed by its dotted name."""
    return start_weights(ad, th, layers)()


def start_weights(ad: Adapter, th: Thresholds, layers=None):
    """analyze_weights in two halves: the device work and the copy to the host are queued now, and the returned
    function waits for the copy and builds the statistics on the host (detect calls it after the forward passes,
    so on an accelerator the weights are reduced while the host launches the forward). Linears of one shape, dtype
    and device are stacked (up to CHUNK_BYTES at a time) and reduced together; what all of them need comes to the
    host in one copy."""
    refs = [ref for ref in ad.linear_refs() if layers is None or ref.layer in layers]
    groups: dict[tuple, list[int]] = {}
    for n, ref in enumerate(refs):
        w = ref.module.weight
        groups.setdefault((tuple(w.shape), w.dtype, w.device), []).append(n)
    chunks, parts = [], []
    for members in groups.values():
        w = refs[members[0]].module.weight
        per = max(1, CHUNK_BYTES // (w.numel() * w.element_size()))
        for c in range(0, len(members), per):
            chunks.append(members[c:c + per])
            with torch.no_grad():                   # no autograd record, and no detach op per weight
                parts.append(_on_device([refs[n].module.weight for n in chunks[-1]]))
    copied, events = start_to_host([t for p in parts for t in p], numpy=True)

    def finish() -> dict:
        for ev in events:
            ev.synchronize()
        host = iter(copied)
        per_ref: list = [None] * len(refs)
        for members, p in zip(chunks, parts):
            for n, stats in zip(members, _stats_on_host(th, *[next(host) for _ in p])):
                per_ref[n] = stats
        return {ref.name: {"layer": ref.layer, "role": ref.role, **stats} for ref, stats in zip(refs, per_ref)}
    return finish
