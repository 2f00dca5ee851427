"""Activation outliers: per layer and site, the top values, the median, the massive hits under each
criterion (Sun et al. massive, An et al. 1000x mean, PrefixQuant 64x median token max), the outlier
channels, and the residual channels that persist across layers."""
from __future__ import annotations

import numpy as np
import torch

from ..capture import SiteStats, SiteTable, nonzero, to_device
from .thresholds import Thresholds
from .tokens import Namer, taxonomy

MAX_INT8_CHANNELS = 64
PERSISTENT_SHARE = 0.25        # a residual channel is persistent when massive in >= 25% of the layers


def _record(r: dict, namer: Namer) -> dict:
    token, kind = namer.tag(r["token_id"], r["pos"])
    return {**r, "token": token, "type": kind}


_POW10 = [float(10 ** i) for i in range(23)]                # exact doubles


def round5(values: torch.Tensor) -> torch.Tensor:
    """float(f"{v:.5g}") of every value, as a float64 tensor on the values' device, exactly (round5_parts)."""
    out, ok, x = round5_parts(values)
    odd = (~ok).nonzero().flatten()
    if odd.numel():
        fixed = [float(f"{v:.5g}") for v in x.flatten()[odd].tolist()]
        out.view(-1)[odd] = torch.tensor(fixed, dtype=torch.float64, device=x.device)
    return out


_POW10_ON: dict = {}


def _pow10_on(device) -> torch.Tensor:
    """_POW10 as a float64 tensor on `device`, copied once (a plain torch.tensor(..., device=cuda) waits for the
    device: scripts/h200_session11/detect_syncs.py found it in detect, call G11)."""
    if device not in _POW10_ON:
        _POW10_ON[device] = to_device(torch.tensor(_POW10, dtype=torch.float64), device)
    return _POW10_ON[device]


def round5_parts(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float(f"{v:.5g}") of every value, as a float64 tensor on the values' device, exactly: x * 10^p with an exact
    power of ten is one rounding away from the true scaled value, so rounding half to even gives the 5 significant
    digits wherever the scaled value is exact or not within 1e-6 of a rounding midpoint or of 10^4 / 10^5; the result
    n / 10^p (or the exact n * 10^-p) is then the double nearest n * 10^-p, which is what float() of the printed
    digits gives. The few inexact values near a midpoint, and zeros, non-finite or extreme values, take Python's
    formatting: returns (rounded, ok, the float64 values), with ok False where the rounded value is not yet right
    (round5 formats those; round_channels leaves them to the host, see site_lists), without reading a value on the
    device."""
    x = values.detach().double().flatten()
    pw = _pow10_on(x.device)
    a = x.abs()
    ok = torch.isfinite(a) & (a >= 1e-15) & (a < 1e15)
    safe = torch.where(ok, a, torch.ones_like(a))
    p = (4 - torch.floor(torch.log10(safe))).long()

    def scaled(p):
        return torch.where(p >= 0, safe * pw[p.clamp(0, 22)], safe / pw[(-p).clamp(0, 22)])

    y = scaled(p)
    p = p + (y < 1e4).long() - (y >= 1e5).long()             # log10 can miss by one next to a power of ten
    y = scaled(p)
    # y is exact when a float32 value (24 bits) is scaled up by at most 10^12 (5^12 < 2^28): then rounding half to
    # even is Python's at midpoints too (bf16 activations sit on them often: 4 <= v < 8 on a 1/32 grid, say)
    exact = (p >= 0) & (p <= 12) & (safe == safe.float().double())
    near = ((y - torch.floor(y) - 0.5).abs() <= 1e-6) | (y < 1e4 + 1e-6) | (y >= 1e5 - 1e-6)
    ok &= (y >= 1e4) & (y < 1e5) & (p.abs() <= 22) & (exact | ~near)
    n = torch.round(y)                                       # half to even
    out = torch.copysign(torch.where(p >= 0, n / pw[p.clamp(0, 22)], n * pw[(-p).clamp(0, 22)]), x)
    return out.view(values.shape), ok.view(values.shape), x.view(values.shape)


def site_lists(tables: list[SiteTable]) -> None:
    """What site_summary reads as lists, made per SiteTable in one set of numpy calls over all its rows (its `host`
    statistics, Recorder.to_host; not ~10 calls per site), set on each site as `lists`: its massive channels
    (largest absmax first, ties by channel), its int8 channels (round_channels' int8_top), and its rounded
    per-channel lists, with the values round5_parts left to Python's formatting formatted here (the device never
    waits for this read). The rounded lists are copies: the report keeps them, and a view of the pinned host copy
    would keep all of it alive (and the next detect allocating pinned memory again)."""
    for t in tables:
        h = t.host
        lists = {"massive": _ordered_nonzero(h["massive_count"], h["absmax"]),
                 "int8": int8_lists(h["int8_top"], t.channels)}
        for name, key in (("channel_absmax5", "channel_absmax"), ("channel_absmean5", "channel_absmean")):
            out, ok, x = h[name], h[name + "_ok"], h[name + "_x"]
            # a copy per row (blocks the allocator reuses; a copy of a whole table pages in fresh memory: slower)
            lists[key] = [np.array(o) if clean else exact5(o, k, v)
                          for o, k, v, clean in zip(out, ok, x, ok.all(1).tolist())]
        for s in t.sites:
            s.lists = {k: v[s.row] for k, v in lists.items()}


def exact5(out: np.ndarray, ok: np.ndarray, x: np.ndarray) -> np.ndarray:
    """round5_parts' three arrays (on the host) finished: a copy of `out` with the values it left (not ok) formatted
    by Python, float(f"{v:.5g}") of x there."""
    out = np.array(out)
    odd = np.flatnonzero(~ok)
    out.reshape(-1)[odd] = [float(f"{v:.5g}") for v in x.reshape(-1)[odd].tolist()]
    return out


def _ordered_nonzero(count: np.ndarray, key: np.ndarray) -> list:
    """Per row of count [R, C]: the columns where it is nonzero, by key descending, ties by column (a stable sort),
    as lists."""
    rows, cols = nonzero(count)
    order = np.lexsort((-key[rows, cols], rows))
    cols = cols[order].tolist()
    ends = np.searchsorted(rows[order], np.arange(count.shape[0] + 1)).tolist()
    return [cols[lo:hi] for lo, hi in zip(ends, ends[1:])]


def int8_top(count: torch.Tensor, k: int = MAX_INT8_CHANNELS) -> torch.Tensor:
    """Per row of the INT8 counts [R, C] (on their device): the k largest of count * C + (C - 1 - column), largest
    first. The keys are distinct, so this is the stable sort's order (most windows first, ties by column), made
    where the counts are: sorting on the host was 10-25 ms of detect's report at the 8B shape (every one of
    down_proj's 14,336 input channels can have a nonzero count). int8_lists reads it."""
    C = count.shape[1]
    key = count * C + torch.arange(C - 1, -1, -1, device=count.device)
    return key.topk(min(k, C), dim=1).values


def int8_lists(top: np.ndarray, channels: int) -> list[list[int]]:
    """int8_top's keys (on the host) as each row's channels with a nonzero count, in its order."""
    cols = (channels - 1 - top % channels).tolist()
    return [row[:n] for row, n in zip(cols, (top >= channels).sum(1).tolist())]


def round_channels(tables: list[SiteTable]) -> None:
    """The per-channel lists of the report (absmax, mean |x|) of every site, rounded on the tables' devices in one
    call per device: `channel_absmax5`, `channel_absmean5` in each table's `rounded`, with round5_parts' `_ok` and
    `_x` beside each (site_lists finishes them on the host), and the INT8 channels' order (`int8_top`). No read of
    a device value: queued behind the merges."""
    by_device: dict = {}
    for t in tables:
        by_device.setdefault(t.device, []).append(t)
    for group in by_device.values():
        parts = []
        for t in group:
            tokens = [max(s.tokens, 1) for s in t.sites]
            per_row = tokens[0] if len(set(tokens)) == 1 else \
                to_device(torch.tensor(tokens, dtype=torch.float64), t.device)[:, None]   # pinned: no wait
            parts += [t.state["absmax"], t.state["abssum"] / per_row]
        flat = round5_parts(torch.cat([p.double().reshape(-1) for p in parts]))
        split = [iter(f.split([p.numel() for p in parts])) for f in flat]
        for t in group:
            t.rounded = {}
            for name in ("channel_absmax5", "channel_absmean5"):
                for suffix, part in zip(("", "_ok", "_x"), split):
                    t.rounded[name + suffix] = next(part).view(t.rows(), -1)
            t.rounded["int8_top"] = int8_top(t.state["int8_count"])


def site_summary(s: SiteStats, linears: list[str], namer: Namer, th: Thresholds) -> dict:
    """One site's part of the report, from its statistics on the host (Recorder.to_host: numpy arrays); no read
    of single values through torch."""
    w = max(s.windows, 1)
    absmax, value, count = s.absmax, s.absmax_value, s.massive_count
    window, pos, token = s.absmax_window, s.absmax_pos, s.absmax_token
    c = int(absmax.argmax())
    absmax_at = {"window": int(window[c]), "pos": int(pos[c]), "token_id": int(token[c]), "channel": c,
                 "value": float(value[c])}
    lists = s.lists                                   # site_lists
    massive, int8, int8_count = lists["massive"], lists["int8"], s.int8_count
    median_sum, mean_sum, tokmax_median_sum = s.window_sums.tolist()
    tok_med = tokmax_median_sum / w
    out = {
        "layer": s.layer, "site": s.site, "linears": linears, "channels": s.channels, "windows": s.windows,
        "tokens": s.tokens, "absmax": float(absmax[c]), "absmax_at": _record(absmax_at, namer),
        "median_abs": median_sum / w, "mean_abs": mean_sum / w, "token_max_median": tok_med,
        "massive_floor": s.abs_floor,
        "top": [_record(r, namer) for _, r in s.top.items],
        "hits": {k: h.count for k, h in s.hits.items()},
        "outlier_tokens": {k: _token_table(h, namer) for k, h in s.hits.items() if h.count},
        "massive_channels": [{"channel": j, "tokens": n, "absmax": a, "value": v, "pos": p,
                              "token": namer.text(t)} for j, n, a, v, p, t in
                             zip(massive, *(x[massive].tolist() for x in (count, absmax, value, pos, token)))]
        if massive else [],
        "suggested_token_max_threshold": th.token_ratio * tok_med,
        # arrays in memory (lists in report.json): float(f"{v:.5g}") of each channel's value (round_channels)
        "channel_absmax": lists["channel_absmax"],
        "channel_absmean": lists["channel_absmean"],
    }
    if s.site == "resid":
        out["top3_mean"] = (s.top3_sum / w).tolist()
        # |h| > massive_abs only (compared in the statistics' float32, as torch compares with a Python float)
        out["large_channels"] = np.flatnonzero(absmax > absmax.dtype.type(s.abs_floor)).tolist()
    else:
        out["int8_channels"] = int8                         # channels with any |x| >= int8, most frequent first
        out["int8_share"] = [n / w for n in int8_count[int8].tolist()]   # share of windows where it happens, same order
    return out


def _token_table(hits, namer: Namer) -> dict:
    return {"count": hits.count,
            "positions": [{"pos": p, "count": n} for p, n in hits.positions.most_common(8)],
            "ids": [{"token_id": t, "token": namer.text(t), "count": n, "type": namer.type(t, 1)}
                    for t, n in hits.ids.most_common(8)],
            "initial_ids": [{"token_id": t, "token": namer.text(t), "count": n} for t, n in hits.initial_ids.most_common(3)],
            "taxonomy": taxonomy(hits, namer)}


def residual_channels(layers: list[dict], num_layers: int) -> list[dict]:
    """Residual-stream outlier channels with the layers where each is massive, largest first."""
    seen: dict[int, dict] = {}
    for site in layers:
        for m in site["massive_channels"]:
            d = seen.setdefault(m["channel"], {"channel": m["channel"], "layers": [], "absmax": 0.0, "tokens": {}})
            d["layers"].append(site["layer"])
            if m["absmax"] > d["absmax"]:
                d.update(absmax=m["absmax"], value=m["value"], at_layer=site["layer"], pos=m["pos"], token=m["token"])
    out = sorted(seen.values(), key=lambda d: -d["absmax"])
    for d in out:
        d.pop("tokens")
        d["persistent"] = len(d["layers"]) >= max(2, PERSISTENT_SHARE * num_layers)
        d["layer_range"] = [min(d["layers"]), max(d["layers"])]
    return out
