"""Forward hooks that stream outlier statistics, one batch of windows at a time.

Nothing of size [layers x tokens x channels] or [heads x T x T] survives a batch: each hook reduces
its tensor at once to per-channel running maxima / sums, a few top values with their positions,
token counters (bounded by the vocabulary and the window length) and a handful of sparse records at
the massive positions. So peak memory is one layer's intermediates, whatever the number of windows.

Where the work happens: the running statistics stay on the device of the tensors they watch (the GPU, or each
layer's GPU when accelerate splits the model), and the hooks never wait for the device: no .item(), .tolist(),
bool(), nonzero or boolean-mask indexing of a device tensor inside a hook (tests/test_sequential.py makes each of
them raise there). At the end of each decoder layer, its sites with one channel count are stacked ([S, B, T, C])
and reduced together with one set of kernels (reduce_stacked) to per-channel statistics and a few fixed-size
tensors ([windows x tokens] maxima, MAX_TRACKED lifecycle candidates with a device count). After a batch, its
reductions are folded into the running statistics, which live in one SiteTable per (channel count, device) with a
row per site, with one set of kernels per table (merge); what the host needs is copied in one copy per device and
dtype (pinned memory, queued behind the batch); the host turns it into records (token counters, top values,
lifecycle sums) through numpy, in hook order, while the device computes the next batch (the layers' host-share
hooks run a share each). The sequential pipeline flushes once per layer. On the CPU, the hooks use sparse forms
where reading a value costs nothing (Recorder.dense); both forms give the same report.

Sites (per decoder layer):  attn_in (q/k/v input)  o_in  mlp_in (gate/up input)  down_in  resid (layer output)
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .arch import get_adapter
from .errors import NonFiniteError

if TYPE_CHECKING:                       # detect/ imports this module: no import cycle at run time
    from .detect.thresholds import Thresholds

SITES = ("attn_in", "o_in", "mlp_in", "down_in", "resid")
LINEAR_SITES = ("attn_in", "o_in", "mlp_in", "down_in")
MAX_EXAMPLES = 8
MAX_TRACKED = 64            # massive (token, channel) records per layer per batch kept for the lifecycle
ATTN_MAP_TOKENS = 48        # the attention map kept for plotting: first window, first 48 tokens
SNAPSHOT_TOKENS = 32        # |h| of the first window's first tokens, per layer, for the emergence heat map
GROWTH = 2.0                # a massive value that at least doubles in one layer is decomposed like a new one


class TopK:
    """The k largest values seen so far, each with its record."""

    def __init__(self, k: int):
        self.k = k
        self.items: list[tuple[float, dict]] = []

    def push(self, values: list[float], records: list[dict]) -> None:
        self.items.extend(zip(values, records))
        self.items.sort(key=lambda it: -it[0])
        del self.items[self.k:]


@dataclass
class TokenHits:
    """Tokens flagged by one criterion at one site: counts by token id and position, a few examples."""

    count: int = 0
    ids: Counter = field(default_factory=Counter)          # token ids at positions > 0
    initial_ids: Counter = field(default_factory=Counter)  # token ids at position 0
    positions: Counter = field(default_factory=Counter)
    examples: list = field(default_factory=list)

    def add(self, records: list[dict]) -> None:
        self.count += len(records)
        for r in records:
            (self.initial_ids if r["pos"] == 0 else self.ids)[r["token_id"]] += 1
            self.positions[r["pos"]] += 1
        self.examples.extend(records[: MAX_EXAMPLES - len(self.examples)])


def to_host(tensors: list, numpy: bool = False) -> list:
    """The tensors on the CPU, copied together: one concatenation and one copy per device and dtype (a copy per
    tensor would wait on the device once per tensor). None entries and CPU tensors pass through. numpy=True: numpy
    views instead (one conversion per device and dtype; the report reads them without a torch call per value)."""
    host, events = start_to_host(tensors, numpy)
    for ev in events:
        ev.synchronize()
    return host


def start_to_host(tensors: list, numpy: bool = False) -> tuple[list, list]:
    """to_host without the wait: CUDA tensors are copied into pinned host memory behind the work already queued;
    the host tensors may be read once every returned event has completed (other devices copy at once)."""
    groups: dict[tuple, list[torch.Tensor]] = defaultdict(list)
    for t in tensors:
        if t is not None and (numpy or t.device.type != "cpu"):
            groups[(t.device, t.dtype)].append(t)
    host: dict[int, torch.Tensor] = {}
    events = []
    for (device, dtype), ts in groups.items():
        flat = torch.cat([t if t.dim() == 1 else t.reshape(-1) for t in ts])
        if device.type == "cuda":
            h = torch.empty(flat.shape, dtype=dtype, pin_memory=True).copy_(flat, non_blocking=True)
            ev = torch.cuda.Event()
            ev.record(torch.cuda.current_stream(device))
            events.append(ev)
        else:
            h = flat.cpu()
        if numpy:
            h = h.numpy()
            parts = np.split(h, np.cumsum([t.numel() for t in ts])[:-1])
        else:
            parts = h.split([t.numel() for t in ts])
        for t, part in zip(ts, parts):
            host[id(t)] = part.reshape(t.shape)
    return [None if t is None else host.get(id(t), t) for t in tensors], events


class Backlog:
    """One flush's host work: the callbacks in hook order with their tensors on the host once the copy is done.
    step(n) runs the next n (all by default), waiting for the copy first."""

    def __init__(self, items: list[tuple], host: list, events: list):
        self.items, self.host, self.events, self.done = items, iter(host), events, 0

    def ready(self) -> bool:
        """Whether the copy is done (no wait)."""
        return all(ev.query() for ev in self.events)

    def step(self, n: int | None = None) -> None:
        for ev in self.events:
            ev.synchronize()
        self.events = []
        end = len(self.items) if n is None else min(len(self.items), self.done + n)
        while self.done < end:
            fn, ts = self.items[self.done]
            self.done += 1
            fn(*[next(self.host) for _ in ts])


class Pending:
    """Host work on small tensors, in hook order: (callback, tensors). Work whose tensors are all on the CPU runs at
    once (there is no device to wait for); work on a device tensor waits for flush(), which copies every waiting
    tensor to the host at once (to_host) and runs the callbacks in order. Once one item waits, the later ones wait
    too, so the order holds. start() is flush() in two halves: the copy starts now, the callbacks run later."""

    defer = False     # True: CPU work waits for flush() too (what a run on a device does; tests and benchmarks)

    def __init__(self):
        self.items: list[tuple] = []

    def add(self, fn, *tensors) -> None:
        if not self.defer and not self.items and all(t is None or t.device.type == "cpu" for t in tensors):
            fn(*tensors)
        else:
            self.items.append((fn, tensors))

    def start(self) -> Backlog:
        items, self.items = self.items, []
        return Backlog(items, *start_to_host([t for _, ts in items for t in ts]))

    def flush(self) -> None:
        self.start().step()


class Batch:
    """One batch of windows as the hooks see it: token ids (host, and a copy per device), the index of its
    first window, whether attention statistics run, and what layer i hands to layer i+1 on the host
    (the massive-token flags of the residual)."""

    def __init__(self, ids: torch.Tensor, window0: int, attention: bool):
        self.ids = ids.detach().cpu().long()
        self.ids_np = self.ids.numpy()               # the host records index it without a torch call
        self.window0, self.attention = window0, attention
        self.flags_in: torch.Tensor | None = None    # [B, T] massive tokens of the current layer's input
        self.flags_out: torch.Tensor | None = None   # [B, T] the same at the current layer's output
        self._on: dict = {}

    def ids_on(self, device) -> torch.Tensor:
        if device.type == "cpu":
            return self.ids
        if device not in self._on:
            self._on[device] = self.ids.to(device)
        return self._on[device]


class SiteTable:
    """The running statistics of every site with one channel count on one device, one row per site ([rows, C] per
    statistic, on the device): a batch's reductions of all those sites fold in with one set of kernels (merge)."""

    STATE = {"absmax": torch.float32, "absmax_value": torch.float32, "absmax_window": torch.long,
             "absmax_pos": torch.long, "absmax_token": torch.long, "abssum": torch.float64,
             "int8_count": torch.long, "massive_count": torch.long}
    # absmax_value: the signed value that set absmax; int8_count: windows with |x| >= int8 in the channel (read for
    # linear inputs only); window_sums: sums over windows of per-window median |h|, mean |h|, median token max
    # (float64, as Python floats add); top3_sum: of the per-window top-1/2/3 channel maxima (Sun et al., read for
    # the residual only)
    WIDE = {"window_sums": 3, "top3_sum": 3}

    def __init__(self, channels: int, device):
        self.channels, self.device = channels, torch.device(device)
        self.sites: list[SiteStats] = []         # by row
        self.state = {name: torch.zeros(0, channels, dtype=dtype, device=device) for name, dtype in self.STATE.items()}
        self.state |= {name: torch.zeros(0, n, dtype=torch.float64, device=device) for name, n in self.WIDE.items()}
        self.rounded: dict[str, torch.Tensor] = {}   # the report's rounded per-channel lists (detect.round_channels)

    def add(self, site: "SiteStats") -> int:
        """A row for a new site (made on the device at the next merge, for all new sites at once)."""
        self.sites.append(site)
        return len(self.sites) - 1

    def rows(self) -> int:
        return self.state["absmax"].shape[0]

    def grow(self) -> None:
        n = len(self.sites) - self.rows()
        if n > 0:
            for name, t in self.state.items():
                self.state[name] = torch.cat([t, t.new_zeros(n, t.shape[1])])


class SiteStats:
    """One site of one layer: what the host keeps (the largest token maxima, the flagged tokens) and its row of a
    SiteTable. After Recorder.to_host its statistics are numpy arrays (that row of each SiteTable statistic, and
    channel_absmax5 / channel_absmean5 from the report's rounding)."""

    def __init__(self, layer: int, site: str, channels: int, abs_floor: float, th: Thresholds, table: SiteTable):
        self.layer, self.site, self.channels, self.abs_floor, self.th = layer, site, channels, abs_floor, th
        self.table, self.row = table, table.add(self)
        self.tokens = 0
        self.windows = 0
        self.top = TopK(th.top_k)                              # largest token maxima
        self.hits = {"massive": TokenHits(), "token_mean_ratio": TokenHits(), "token_ratio": TokenHits()}

    def running(self, name: str) -> torch.Tensor | None:
        """The site's running statistic on the device; None before its first merge."""
        return self.table.state[name][self.row] if self.row < self.table.rows() else None


@dataclass
class Reduced:
    """The reductions of one batch at S sites of a layer with one channel count, stacked, waiting for merge().
    The device form leaves the window of each channel's max to the merge (widx, wval); the CPU form brings it."""

    sites: list[SiteStats]
    batch: Batch
    wmax: torch.Tensor            # [S, B, C] per-window channel max |x| (x's dtype; [S, B, 1, C] in the device form)
    wsum: torch.Tensor            # [S, B, C] float32
    massive: torch.Tensor         # [S, B, C] massive entries per channel
    med: torch.Tensor             # [S, B] median |x| per window (device form: [S, B, 1, 1])
    mean: torch.Tensor            # [S, B] mean |x| per window
    tok_med: torch.Tensor         # [S, B] median token max per window (device form: [S, B, 1])
    widx: torch.Tensor | None = None    # [S, B, 1, C] the token of each window's channel max (device form)
    wval: torch.Tensor | None = None    # [S, B, 1, C] the signed value there
    cmax: torch.Tensor | None = None    # [S, C] the batch's channel max (CPU form) ...
    cwin: torch.Tensor | None = None    # ... its window, token and signed value
    pos: torch.Tensor | None = None
    value: torch.Tensor | None = None


def reduce_stacked(x: torch.Tensor, floors: torch.Tensor, below: torch.Tensor, th: Thresholds) -> tuple:
    """The device form of a batch's passes over S sites' [S, B, T, C] tensors at once: whole-tensor kernels, nothing
    read on the host. Maxima are exact in any dtype, so a bf16 tensor is never copied to float32 whole; sums
    accumulate in float32. floors: [S, 1, 1, 1] absolute floor of each site's massive test. Returns the Reduced fields
    (wmax, wsum, massive, med, mean, tok_med, widx, wval) and what the host records need (tok_max, tok_arg,
    tok_val, bad)."""
    S, B, T, C = x.shape        # kept dimensions stay (size 1): the consumers flatten them, no view op here
    a = x.abs()
    wmax, widx = a.max(2, keepdim=True)                     # [S, B, 1, C] and the token holding it
    wval = x.gather(2, widx)
    tok_max, tok_arg = a.max(-1, keepdim=True)              # [S, B, T, 1] per-token max and the channel holding it
    tok_val = x.gather(-1, tok_arg)
    wsum = a.sum(2) if a.dtype == torch.float32 else a.sum(2, dtype=torch.float32)     # [S, B, C]
    med = _median_estimate(a.flatten(0, 1), th.median_samples).float().view(S, B, 1, 1)
    mean = wsum.sum(-1) / (T * C)                           # [S, B]
    tok_med = tok_max.median(2).values                      # [S, B, 1]
    bad = (~torch.isfinite(wmax)).any(1).sum((-2, -1))     # [S] channels whose max is not finite
    # massive entries: |x| > floor and |x| >= massive_rel x the window's median; ">= r" is "> the float below r"
    thr = torch.maximum(torch.nextafter(th.massive_rel * med, below), floors)
    massive = (a > thr).sum(2, dtype=torch.int32)
    return (wmax, wsum, massive, med, mean, tok_med, widx, wval), (tok_max, tok_arg, tok_val, bad)


def reduce_sparse(s: SiteStats, x: torch.Tensor, th: Thresholds) -> tuple:
    """The CPU form of one site's passes over [B, T, C] (reading a value costs nothing there): the positions of
    maxima and the massive counts only where they can be nonzero. Returns the Reduced fields (with S = 1) and the
    host records' inputs (tok_max, lookup, bad); lookup(b, t): the channels of those tokens' max |x| and the values."""
    B, T, C = x.shape
    a = x.abs()
    wmax = a.amax(1)                            # [B, C] per-window channel max
    cmax, cwin = wmax.max(0)                    # [C] the batch's channel max and the window holding it
    bad = (~torch.isfinite(cmax)).sum()
    t = torch.zeros(C, dtype=torch.long)
    prev = s.running("absmax")
    new = (cmax > (0 if prev is None else prev)).nonzero().flatten()   # where the running max may move
    if new.numel():
        t[new] = a[cwin[new], :, new].argmax(-1)
    tok_max = a.amax(-1)

    def lookup(b, tt):
        c = a[b, tt].argmax(-1)
        return c.tolist(), x[b, tt, c].tolist()
    wsum = a.sum(1) if a.dtype == torch.float32 else a.sum(1, dtype=torch.float32)    # [B, C]
    med = _median_estimate(a, th.median_samples).float()          # [B] median |h| of each window
    mean = wsum.sum(-1) / (T * C)
    tok_med = tok_max.median(-1).values
    thr = torch.nextafter(th.massive_rel * med, torch.tensor(-math.inf)).clamp_min(s.abs_floor)
    massive = torch.zeros(B, C, dtype=torch.int32)
    cols = (wmax > thr[:, None]).any(0).nonzero().flatten()
    if cols.numel():
        massive[:, cols] = (a[:, :, cols] > thr[:, None, None]).sum(1, dtype=torch.int32)
    fields = dict(wmax=wmax, wsum=wsum, massive=massive, med=med, mean=mean, tok_med=tok_med, cmax=cmax, cwin=cwin,
                  pos=t, value=x[cwin, t, torch.arange(C)])
    return {k: v[None] for k, v in fields.items()}, (tok_max[None], lookup, bad[None])


def merge(items: list[Reduced]) -> None:
    """Fold one batch's reductions at sites of one SiteTable (rows in order) into its running statistics, all
    sites at once: each statistic is the per-site one, stacked."""
    table, batch = items[0].sites[0].table, items[0].batch
    table.grow()
    sites = [s for it in items for s in it.sites]
    r0 = sites[0].row
    rows = slice(r0, r0 + len(sites))
    if [s.row for s in sites] != list(range(r0, r0 + len(sites))):   # sites merge in the order their rows were made
        raise AssertionError("capture: sites merged out of row order")

    def cat(name):
        ts = [getattr(it, name) for it in items]
        return ts[0] if len(ts) == 1 else torch.cat(ts)

    wmax = cat("wmax").float().flatten(2)          # [S, B, C]
    if items[0].widx is not None:                  # the device form: the batch's window of each channel's max
        cmax, cwin = wmax.max(1, keepdim=True)     # [S, 1, C]
        t = cat("widx").flatten(2).gather(1, cwin).squeeze(1)
        value = cat("wval").flatten(2).gather(1, cwin).squeeze(1).float()
        cmax, cwin = cmax.squeeze(1), cwin.squeeze(1)
    else:
        cmax, cwin, t, value = cat("cmax").float(), cat("cwin"), cat("pos"), cat("value").float()
    st = {name: v[rows] for name, v in table.state.items()}
    better = cmax > st["absmax"]
    st["absmax"].copy_(torch.where(better, cmax, st["absmax"]))
    st["absmax_value"].copy_(torch.where(better, value, st["absmax_value"]))
    st["absmax_window"].copy_(torch.where(better, cwin + batch.window0, st["absmax_window"]))
    st["absmax_pos"].copy_(torch.where(better, t, st["absmax_pos"]))
    st["absmax_token"].copy_(torch.where(better, batch.ids_on(cwin.device)[cwin, t], st["absmax_token"]))
    st["abssum"] += cat("wsum").sum(1).double()
    th = sites[0].th
    st["int8_count"] += (wmax >= th.int8).sum(1)     # windows where the channel reaches the LLM.int8 magnitude
    st["massive_count"] += cat("massive").sum(1)
    st["window_sums"] += torch.stack([cat("med").flatten(1).sum(1), cat("mean").sum(1),
                                      cat("tok_med").float().flatten(1).sum(1)], 1).double()
    C = wmax.shape[-1]                             # top-1/2/3 channel maxima per window (Sun et al. Fig. 1)
    st["top3_sum"][:, :min(3, C)] += wmax.topk(min(3, C), dim=-1).values.sum(1).double()
    B, T = batch.ids.shape
    for s in sites:
        s.tokens += B * T
        s.windows += B


def _median_estimate(a: torch.Tensor, samples: int) -> torch.Tensor:
    """Median of each window's |h| [B, T, C] from an evenly strided sample of about `samples` values
    (an exact median sorts the whole tensor; a 1000x-median test does not need that precision)."""
    flat = a.reshape(a.shape[0], -1)
    stride = max(1, flat.shape[1] // samples)
    while math.gcd(stride, a.shape[-1]) != 1:     # walk across channels, not down a fixed subset of them
        stride += 1
    return flat[:, ::stride].median(-1).values


def _records(pairs, lookup, batch: Batch) -> list[dict]:
    """One record per (window in batch, position): its token, the channel of its max |x| and that value."""
    if not pairs:
        return []
    b, t = (list(v) for v in zip(*pairs))
    chans, vals = lookup(b, t)
    return [{"window": batch.window0 + bb, "pos": tt, "token_id": tid, "channel": c, "value": v}
            for bb, tt, tid, c, v in zip(b, t, batch.ids_np[b, t].tolist(), chans, vals)]


@dataclass
class AttentionStats:
    """Per layer: key positions receiving >= share x T attention mass, sink share per head."""

    heads: int
    windows: int = 0
    sink_sum: torch.Tensor = None          # [H] sum over windows of mean attention to position 0
    recv0_sum: float = 0.0                 # head-averaged mass received by position 0, / T
    outliers: TokenHits = field(default_factory=TokenHits)
    attn_map: torch.Tensor | None = None   # [n, n] of the most sink-dominated head, first window
    attn_map_head: int = -1
    map_requested: bool = False

    def __post_init__(self):
        self.sink_sum = torch.zeros(self.heads, dtype=torch.float64)


@dataclass
class LayerLife:
    """Sparse lifecycle records of one layer, keyed by (residual channel, "initial" | "other" token)."""

    # channel -> [count, sum h_in, sum attn contribution, sum mlp contribution, sum h_out,
    #             count of mlp contribution opposite in sign to h_in, count vanishing]
    track: dict = field(default_factory=lambda: defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0, 0, 0]))
    # channel -> {"count", "attn", "mlp", "parts": {k: [count, sum contrib, sum x_k, sum gate_k, sum up_k]}}
    # (positions where the value becomes massive, or at least doubles, in this layer)
    emerge: dict = field(default_factory=dict)
    cancel: dict = field(default_factory=dict)            # the same split where the outlier vanishes
    tokens: Counter = field(default_factory=Counter)    # token ids at the tracked positions


class Recorder:
    """Installs the hooks, runs batches, keeps the streamed statistics.

    In memory: attach(), run(ids, window0) per batch (each ends with a flush), detach().
    Layer by layer (sysq.sequential): begin() every batch first, then per layer attach([i]), use(batch) before
    each batch's pass through layer i, detach(), flush()."""

    # whole-tensor kernels (True) or the CPU's sparse forms (False); None: by the device of each tensor
    dense: bool | None = None

    def __init__(self, model: nn.Module, th: Thresholds, attention: bool = True, snapshot: bool = False):
        self.model, self.th, self.attention, self.snapshot = model, th, attention, snapshot
        self.ad = get_adapter(model)
        L = self.ad.num_layers
        self.sites: dict[tuple[int, str], SiteStats] = {}
        self.tables: dict[tuple, SiteTable] = {}      # (channels, device) -> the running statistics of those sites
        self._consts: dict = {}                       # device constants of the hooks, made once
        self.site_linears: dict[tuple[int, str], list[str]] = defaultdict(list)
        for ref in self.ad.linear_refs():
            self.site_linears[(ref.layer, _site_of(ref.role))].append(ref.name)
        self.attn = [AttentionStats(self.ad.num_heads) for _ in range(L)]
        self.life = [LayerLife() for _ in range(L)]
        # sequence-dimension consistency per layer: activation-outlier tokens of the layer input,
        # attention-outlier keys of the layer, both
        self.seq = [[0, 0, 0] for _ in range(L)]
        # Q/K/V norms per layer: [sum at outlier tokens (q,k,v), count, sum at other tokens (q,k,v), count]
        self.qkv = [[torch.zeros(3, dtype=torch.float64), 0, torch.zeros(3, dtype=torch.float64), 0] for _ in range(L)]
        self.snapshots: dict[int, torch.Tensor] = {}     # layer -> |h| [SNAPSHOT_TOKENS, C] of window 0
        self.window0_ids: torch.Tensor | None = None
        self.windows = 0
        self.pending = Pending()
        self._reduced: list[Reduced] = []
        self._handles = []
        self._host_handles = []              # host-only work (the previous batch's records), no device tensors
        self._cur: dict = {}
        self.batch: Batch | None = None
        self._backlog: Backlog | None = None

    # ---- running ------------------------------------------------------------------------------
    def attach(self, layers=None) -> "Recorder":
        """Hook every decoder layer, or only `layers` (indices)."""
        ad, reg = self.ad, self._handles
        seen_act, seen_layers = set(), []
        for i in range(ad.num_layers) if layers is None else layers:
            layer = ad.layers()[i]
            reg.append(layer.register_forward_pre_hook(self._layer_in(i), with_kwargs=True))
            self._host_handles.append(layer.register_forward_pre_hook(self._host_share(len(seen_layers) + 1)))
            seen_layers.append(i)
            reg.append(layer.register_forward_hook(self._layer_out(i)))
            attn_in = ad.attn_inputs(i)
            reg.append(attn_in[0][1].register_forward_pre_hook(self._site(i, "attn_in")))
            for role, lin in attn_in:
                reg.append(lin.register_forward_hook(self._qkv_norm(role)))
            reg.append(ad.linears(i)["o"].register_forward_pre_hook(self._site(i, "o_in")))
            if self.attention:
                reg.append(ad.attention(i).register_forward_hook(self._attn(i)))
            reg.append(ad.mlp_norm(i).register_forward_pre_hook(self._stash_input("h_mid")))
            mlp_in = ad.mlp_inputs(i)
            reg.append(mlp_in[0][1].register_forward_pre_hook(self._site(i, "mlp_in")))
            for role, lin in mlp_in:
                reg.append(lin.register_forward_hook(self._stash_output(role)))
            act = ad.act_fn(i)
            if id(act) not in seen_act:                 # some families share one activation module
                seen_act.add(id(act))
                reg.append(act.register_forward_hook(self._stash_output("act")))
            reg.append(ad.down(i).register_forward_pre_hook(self._site(i, "down_in")))
        return self

    def detach(self) -> None:
        for h in self._handles + self._host_handles:
            h.remove()
        self._handles.clear()
        self._host_handles.clear()
        self._cur = {}

    def begin(self, ids: torch.Tensor, window0: int, attention: bool = True) -> Batch:
        """A new batch of windows (counted now). attention=False: the model runs its own kernel (no
        probabilities), so the attention statistics and Q/K/V norms skip this batch."""
        batch = Batch(ids, window0, attention and self.attention)
        if self.window0_ids is None:
            self.window0_ids = batch.ids[0, :ATTN_MAP_TOKENS].clone()
        self.windows += batch.ids.shape[0]
        return batch

    def use(self, batch: Batch) -> None:
        """The batch the next forward pass carries."""
        self.batch, self._cur = batch, {}

    @torch.no_grad()
    def run(self, ids: torch.Tensor, window0: int, attention: bool = True) -> None:
        """One batch of windows through the whole model. Its statistics are folded in on the device at once; its
        host records are made while the next batch runs (flush() makes the last ones)."""
        self.use(self.begin(ids, window0, attention))
        try:
            base = getattr(self.model, "base_model", self.model)   # the logits are not needed
            base(input_ids=ids.to(self.model.device), use_cache=False)
        finally:
            self._cur = {}
        self._step_backlog()                # what the hooks left of the previous batch's records
        self._merge()
        self._backlog = self.pending.start()

    def flush(self) -> None:
        """Fold the batches' reductions into the running statistics (merge_sites), then move what the hooks left
        on the device to the host and make the records (Pending)."""
        self._step_backlog()
        self._merge()
        self.pending.flush()

    def _step_backlog(self, n: int | None = None) -> None:
        """Run n (default: all) of the previous batch's host callbacks. The decoder layers' pre-hooks run a share
        each, so on an accelerator the host makes batch k's records while the device computes batch k + 1 (a
        wait here would be for batch k's copy, queued before batch k + 1)."""
        if self._backlog is not None:
            self._backlog.step(n)
            if self._backlog.done == len(self._backlog.items):
                self._backlog = None

    def _merge(self) -> None:
        groups: dict[tuple, list[Reduced]] = {}
        for it in self._reduced:          # hook order: a table's earlier batches merge first
            groups.setdefault((id(it.batch), id(it.sites[0].table)), []).append(it)
        self._reduced = []
        for items in groups.values():
            merge(items)

    def to_host(self) -> None:
        """The running statistics to the CPU as numpy arrays (one copy per device and dtype), each site's row set on
        the site, for the report."""
        named = [(t, name, v) for t in self.tables.values() for name, v in (t.state | t.rounded).items()]
        for (t, name, _), h in zip(named, to_host([v for *_, v in named], numpy=True)):
            for site in t.sites:
                setattr(site, name, h[site.row])

    # ---- hooks --------------------------------------------------------------------------------
    def _host_share(self, k: int):
        """Before the k-th hooked layer: the previous batch's callbacks up to k / layers of them."""
        def hook(mod, args):
            if self._backlog is not None and self._backlog.ready():     # else a later layer catches up
                want = -(-len(self._backlog.items) * k // len(self._host_handles))
                self._step_backlog(max(0, want - self._backlog.done))
        return hook

    def _btc(self, t: torch.Tensor) -> torch.Tensor:
        """[B, T, C] view of a hidden tensor (OPT flattens tokens to [B*T, C] inside its layers)."""
        return (t if t.dim() == 3 else t.view(*self.batch.ids.shape, -1)).detach()

    def _site_stats(self, i: int, site: str, x: torch.Tensor) -> SiteStats:
        key = (i, site)
        if key not in self.sites:
            floor = self.th.massive_abs if site == "resid" else self.th.input_abs
            tk = (x.shape[-1], x.device)
            if tk not in self.tables:
                self.tables[tk] = SiteTable(*tk)
            self.sites[key] = SiteStats(i, site, x.shape[-1], floor, self.th, self.tables[tk])
        return self.sites[key]

    def _const(self, device, values: tuple, shape=(-1,)) -> torch.Tensor:
        """A float32 device tensor made once (filled on the device: no copy from the host, no wait)."""
        key = (device, values, shape)
        if key not in self._consts:
            t = torch.empty(len(values), dtype=torch.float32, device=device)
            for k, v in enumerate(values):
                t[k] = v
            self._consts[key] = t.view(shape)
        return self._consts[key]

    def _reduce_layer(self, i: int, xs: list[tuple[str, torch.Tensor]]) -> None:
        """A layer's sites, reduced together: those with one channel count, device and dtype stacked into one
        [S, B, T, C] tensor and reduced with one set of kernels (the device form), or one by one (the CPU form).
        Their host records are one callback for the layer."""
        groups: dict[tuple, list[tuple[str, torch.Tensor]]] = {}
        for site, x in xs:
            groups.setdefault((x.shape[-1], x.device, x.dtype), []).append((site, x))
        meta, tensors = [], []
        for (_, device, _), members in groups.items():
            sites = [self._site_stats(i, site, x) for site, x in members]    # rows in the order they merge
            if self._dense(members[0][1]):
                x = members[0][1][None] if len(members) == 1 else torch.stack([x for _, x in members])
                floors = self._const(device, tuple(s.abs_floor for s in sites), (-1, 1, 1, 1))
                fields, (tok_max, tok_arg, tok_val, bad) = reduce_stacked(x, floors, self._const(device, (-math.inf,)),
                                                                          self.th)
                self._reduced.append(Reduced(sites, self.batch, *fields))
                meta.append((sites, None))
                tensors += [tok_max, fields[3], fields[4], fields[5], bad, tok_arg, tok_val]
            else:
                for s, (_, x) in zip(sites, members):
                    fields, (tok_max, lookup, bad) = reduce_sparse(s, x, self.th)
                    self._reduced.append(Reduced([s], self.batch, **fields))
                    meta.append(([s], lookup))
                    tensors += [tok_max, fields["med"], fields["mean"], fields["tok_med"], bad, None, None]
        self.pending.add(partial(self._flag_tokens, self.batch, meta), *tensors)

    def _flag_tokens(self, batch: Batch, meta: list, *tensors) -> None:
        """Host part of a layer's sites in a batch: the non-finite check (in forward order), token records under
        each criterion and the top token maxima, a few torch calls per group of stacked sites."""
        parts = [tensors[7 * k:7 * k + 7] for k in range(len(meta))]
        bad = [(SITES.index(s.site), s, n) for (sites, _), p in zip(meta, parts) for s, n in zip(sites, p[4].tolist())]
        for _, s, n in sorted(bad, key=lambda e: e[0]):
            if n:
                where = ", ".join(self.site_linears.get((s.layer, s.site), [])) or f"output of decoder layer {s.layer}"
                raise NonFiniteError(f"non-finite activations in {n} channel(s) at layer {s.layer} {s.site} ({where}); "
                                     f"check the model weights and dtype (try float32)")
        for (sites, lookup), (tok_max, med, mean, tok_med, _, tok_arg, tok_val) in zip(meta, parts):
            self._flag_group(batch, sites, lookup, tok_max, med, mean, tok_med, tok_arg, tok_val)

    def _flag_group(self, batch: Batch, sites: list[SiteStats], lookup, tok_max, med, mean, tok_med, tok_arg,
                    tok_val) -> None:
        """[S, B, T] token maxima of S sites, in numpy (float32 arrays compared with Python floats in float32, as
        torch does) and one topk: lookup(b, t) (one site), or tok_arg / tok_val, give the channels of those tokens'
        max |x| and the values there."""
        th = self.th
        tmt = tok_max.float()
        S, B = tmt.shape[:2]
        tm, tmed = tmt.numpy().reshape(S, B, -1), tok_med.float().numpy().reshape(S, B)
        med, mean = med.numpy().reshape(S, B), mean.numpy()
        T = tm.shape[-1]
        floors = np.array([s.abs_floor for s in sites], dtype=tm.dtype)[:, None, None]
        massive_tok = (tm > floors) & (tm >= th.massive_rel * med[..., None])
        flags = {"massive": massive_tok,
                 "token_mean_ratio": tm > th.token_mean_ratio * mean[..., None],
                 "token_ratio": tm > th.token_ratio * tmed[..., None]}
        if lookup is None:
            ta, tv = tok_arg.numpy().reshape(S, B, T), tok_val.float().numpy().reshape(S, B, T)

            def look(k):
                return lambda b, t: (ta[k, b, t].tolist(), tv[k, b, t].tolist())
        else:
            def look(k):
                return lookup
        for name, f in flags.items():
            ks, bs, ts = np.nonzero(f)
            if len(ks):
                ends = np.searchsorted(ks, np.arange(S + 1)).tolist()
                bs, ts = bs.tolist(), ts.tolist()
                for k in range(S):
                    if ends[k + 1] > ends[k]:
                        pairs = list(zip(bs[ends[k]:ends[k + 1]], ts[ends[k]:ends[k + 1]]))
                        sites[k].hits[name].add(_records(pairs, look(k), batch))
        v, flat = tmt.reshape(S, -1).topk(min(th.top_k, B * T), dim=-1)
        for k, (vs, fs) in enumerate(zip(v.tolist(), flat.tolist())):
            sites[k].top.push(vs, _records([(j // T, j % T) for j in fs], look(k), batch))
        for k, s in enumerate(sites):
            if s.site == "resid":
                batch.flags_out = massive_tok[k]

    def _dense(self, x: torch.Tensor) -> bool:
        return x.device.type != "cpu" if self.dense is None else self.dense

    def _layer_in(self, i: int):
        def hook(mod, args, kwargs):
            h = self._btc(args[0] if args else kwargs["hidden_states"])
            self._cur = {"h_in": h}
            if i == 0:   # the embeddings: thresholds of the first layer's input, not kept as a site
                a = h.abs()
                med = _median_estimate(a, self.th.median_samples).float()
                self.pending.add(partial(self._input_flags, self.batch), a.amax(-1).float(), med)
        return hook

    def _input_flags(self, batch: Batch, tm, med) -> None:
        tm, med = tm.numpy(), med.numpy()      # float32: compared with Python floats in float32, as torch does
        batch.flags_in = (tm > self.th.massive_abs) & (tm >= self.th.massive_rel * med[:, None])

    def _site(self, i: int, site: str):
        def hook(mod, args):
            x = self._btc(args[0])
            self._cur.setdefault("sites", []).append((site, x))
            if site == "down_in":
                self._cur["down_in"] = x
        return hook

    def _stash_input(self, name: str):
        def hook(mod, args):
            self._cur[name] = self._btc(args[0])
        return hook

    def _stash_output(self, name: str):
        def hook(mod, args, out):
            self._cur[name] = self._btc(out)
        return hook

    def _qkv_norm(self, role: str):
        ad = self.ad

        def hook(mod, args, out):
            if not self.batch.attention:
                return
            B, T, _ = out.shape
            hd = ad.head_dim
            if role == "qkv":
                q, k, v = out.split([ad.num_heads * hd, ad.num_kv_heads * hd, ad.num_kv_heads * hd], -1)
                parts = {"q": q, "k": k, "v": v}
            else:
                parts = {role: out}
            for r, t in parts.items():  # RoPE rotates pairs: per-head norms before RoPE equal those after
                self._cur["n" + r] = t.detach().float().view(B, T, -1, hd).norm(dim=-1).mean(-1)
        return hook

    def _attn(self, i: int):
        st = self.attn[i]

        def hook(mod, args, out):
            w = out[1] if isinstance(out, tuple) and len(out) > 1 else None
            if w is None:
                return
            w = w.detach()
            B, H, Tq, T = w.shape
            recv = w.sum(2, dtype=torch.float32)              # [B, H, T] mass each key receives
            sink = recv[..., 0] / Tq                          # [B, H] mean attention to position 0
            mean_recv = recv.mean(1)                          # [B, T] averaged over heads
            flags = mean_recv >= self.th.attention_share * Tq
            self._cur["att_flags"] = flags
            amap = None
            if not st.map_requested:                          # every head of the first window; the host picks one
                n = min(ATTN_MAP_TOKENS, T)
                amap, st.map_requested = w[0, :, :n, :n].float(), True
            st.windows += B
            self.pending.add(partial(self._attn_records, st, self.batch, Tq), sink, mean_recv, flags, amap)
        return hook

    def _attn_records(self, st: AttentionStats, batch: Batch, Tq: int, sink, mean_recv, flags, amap) -> None:
        st.sink_sum += sink.sum(0).double()
        st.recv0_sum += float((mean_recv[:, 0].sum() / Tq).numpy())
        b, t = np.nonzero(flags.numpy())
        if len(b):
            st.outliers.add([{"window": batch.window0 + bb, "pos": tt, "token_id": tid, "mass": m}
                             for bb, tt, tid, m in zip(b.tolist(), t.tolist(), batch.ids_np[b, t].tolist(),
                                                       mean_recv.numpy()[b, t].tolist())])
        if amap is not None:
            h = int(sink.numpy()[0].argmax())
            st.attn_map, st.attn_map_head = amap[h].clone(), h

    def _layer_out(self, i: int):
        def hook(mod, args, out):
            h_out = self._btc(out[0] if isinstance(out, tuple) else out)
            cur, batch = self._cur, self.batch
            self._reduce_layer(i, cur.get("sites", []) + [("resid", h_out)])
            life = self._hits(i, cur, h_out, self._dense(h_out))
            norms = [cur.get(k) for k in ("nq", "nk", "nv")]
            snap = None
            if self.snapshot and batch.window0 == 0:
                snap = h_out[0, :SNAPSHOT_TOKENS].abs().float()
            self.pending.add(partial(self._layer_records, i, batch), *life, cur.get("att_flags"), *norms, snap)
            self._cur = {}
        return hook

    def _layer_records(self, i: int, batch: Batch, count, hits, values, terms_k, terms, att_flags, nq, nk, nv,
                       snap):
        """Host part of a layer's output hook: lifecycle, consistency, the residual flags handed on. Host tensors
        are read through numpy (a torch read here would be a wait for the device if it were a device tensor)."""
        count, hits, values, terms_k, terms, att_flags = (None if t is None else t.numpy() for t in
                                                          (count, hits, values, terms_k, terms, att_flags))
        life = (hits, values, terms_k, terms) if count is None or hits is None else \
            self._select_hits(count, hits, values, terms_k, terms)
        if life is not None and life[0] is not None:
            self._lifecycle(i, batch, *life)
        self._consistency(i, batch.flags_in, att_flags, nq, nk, nv)
        batch.flags_in = batch.flags_out
        if snap is not None:
            self.snapshots[i] = snap

    def _consistency(self, i: int, act: np.ndarray, att: np.ndarray | None, nq, nk, nv) -> None:
        if att is not None:
            s = self.seq[i]
            s[0] += int(act.sum())
            s[1] += int(att.sum())
            s[2] += int((act & att).sum())
        if nq is not None and nk is not None and nv is not None:
            n = torch.stack([nq, nk, nv], -1).numpy()   # [B, T, 3]; the sums in torch, as before
            q = self.qkv[i]
            q[0] += torch.from_numpy(n[act]).sum(0).double()
            q[1] += int(act.sum())
            q[2] += torch.from_numpy(n[~act]).sum(0).double()
            q[3] += int((~act).sum())

    def _hits(self, i: int, cur: dict, h_out: torch.Tensor, dense: bool) -> tuple:
        """Device part of the lifecycle: where the residual is large (|h| > massive_abs, the absolute half of
        the massive test, so an outlier is followed from birth to death even while the median keeps it under
        1000x) before or after layer i, at most MAX_TRACKED (token, channel) hits, with the layer's values there
        and the largest terms of the MLP's write. Kept when there are more: the largest max(|h_in|, |h_out|),
        the first position on ties. Returns (count, hits [m, 3] (b, t, c), values [m, 3] (h_in, h_mid, h_out),
        term columns [m, K], terms [m, K, 4] (x_k * W[c, k], x_k, gate_k, up_k)) or Nones.

        dense (an accelerator): no wait for the device; a fixed MAX_TRACKED candidates, best first, and `count`
        (a device scalar) says how many are hits; the host keeps those (_select_hits). Else (the CPU) exactly the
        hits in position order, count None."""
        none = (None,) * 5
        if "h_mid" not in cur:
            return none
        floor = self.th.massive_abs
        # the layer's input arrives where the previous layer ran (accelerate moves it inside the layer)
        h_in, h_mid = cur["h_in"].to(h_out.device), cur["h_mid"]
        count = None
        if dense:
            # one int64 key per position: score bits (monotonic for |h| >= 0) above the reversed flat index (2^32 - 1
            # - flat), so topk orders by score, then position, and its indices are the positions; non-hits below
            # every hit. A position is a hit when max(|h_in|, |h_out|) > floor (either one is).
            score = torch.maximum(h_in.abs(), h_out.abs())
            big = score > floor
            n = big.numel()
            rev = torch.arange(2**32 - 1, 2**32 - 1 - n, -1, device=big.device).view(big.shape)
            key = rev + torch.where(big, score.float().view(torch.int32).long() * 2**32, -2**32)
            flat = key.view(-1).topk(min(MAX_TRACKED, n)).indices
            T, C = big.shape[1:]
            b, t, c = flat // (T * C), flat // C % T, flat % C
            count = big.sum()
            values = torch.stack([torch.take(h, flat) for h in (h_in, h_mid, h_out)], 1).float()
        else:
            big = (h_in.abs() > floor) | (h_out.abs() > floor)
            b, t, c = big.nonzero().unbind(1)
            if b.shape[0] == 0:
                return none
            if b.shape[0] > MAX_TRACKED:
                score = torch.maximum(h_in[b, t, c].abs(), h_out[b, t, c].abs()).float()
                keep = score.sort(descending=True, stable=True).indices[:MAX_TRACKED]
                b, t, c = b[keep], t[keep], c[keep]
            values = torch.stack([h[b, t, c].float() for h in (h_in, h_mid, h_out)], 1)
        hits = torch.stack([b, t, c], 1)
        if "down_in" not in cur:
            return count, hits, values, None, None
        # the MLP's write into channel c at (b, t) split into x_k * W_down[c, k]; the largest terms
        x = cur["down_in"][b, t].float()                                   # [m, I]
        contrib = x * self.ad.down(i).weight[c].float()
        k = contrib.abs().topk(min(4, contrib.shape[-1]), dim=-1).indices  # [m, K]
        gate, up = _gate_up(cur, b, t)
        if gate is None or up is None:
            nan = torch.full_like(contrib, float("nan"))
            gate, up = nan if gate is None else gate, nan if up is None else up
        terms = torch.stack([v.gather(1, k) for v in (contrib, x, gate, up)], -1)
        return count, hits, values, k, terms

    @staticmethod
    def _select_hits(count, hits, values, terms_k, terms) -> tuple:
        """Host side of a dense _hits: the `count` real hits among the candidates, in position order when all of
        them fit (as the CPU form gives them), else the MAX_TRACKED best in order. None when there is none."""
        n = int(count)
        if n == 0:
            return None
        if n > hits.shape[0]:
            return hits, values, terms_k, terms
        T, C = (int(v) + 1 for v in hits[:n, 1:].max(0))                  # any bound above the positions works
        keep = (hits[:n, 0] * T * C + hits[:n, 1] * C + hits[:n, 2]).argsort()
        return tuple(None if v is None else v[:n][keep] for v in (hits, values, terms_k, terms))

    def _lifecycle(self, i: int, batch: Batch, hits, values, terms_k, terms) -> None:
        """How layer i changed the residual at each hit (host part of _hits)."""
        floor = self.th.massive_abs
        life = self.life[i]
        tids = batch.ids_np[hits[:, 0], hits[:, 1]].tolist()
        for j, ((bb, tt, ch), (vin, vmid, vout), tid) in enumerate(zip(hits.tolist(), values.tolist(), tids)):
            vatt, vmlp = vmid - vin, vout - vmid
            big_in, big_out = abs(vin) > floor, abs(vout) > floor
            key = (ch, "initial" if tt == 0 else "other")   # the first token and the rest age differently
            tr = life.track[key]
            tr[0] += 1
            tr[1] += vin
            tr[2] += vatt
            tr[3] += vmlp
            tr[4] += vout
            tr[5] += int(vin * vmlp < 0)
            vanish = big_in and abs(vout) <= self.th.vanish_ratio * abs(vin)
            tr[6] += int(vanish)
            life.tokens[tid] += 1
            born = big_out and (not big_in or abs(vout) >= GROWTH * abs(vin))
            if (born or vanish) and terms_k is not None:
                _decompose(life.emerge if born else life.cancel, key, vatt, vmlp, terms_k[j].tolist(),
                           terms[j].tolist())


def _decompose(into: dict, key, vatt: float, vmlp: float, cols: list[int], terms: list[list[float]]) -> None:
    """Accumulate the largest terms x_k * W_down[c, k] of one position's MLP write into channel c = key[0]."""
    e = into.setdefault(key, {"count": 0, "attn": 0.0, "mlp": 0.0, "parts": {}})
    e["count"] += 1
    e["attn"] += vatt
    e["mlp"] += vmlp
    for k, (contrib, x, gate, up) in zip(cols, terms):
        p = e["parts"].setdefault(k, [0, 0.0, 0.0, 0.0, 0.0])
        p[0] += 1
        p[1] += contrib
        p[2] += x
        p[3] += gate
        p[4] += up


def _gate_up(cur: dict, b: torch.Tensor, t: torch.Tensor):
    """The MLP's gate and up pre-activations [m, I] at positions (b, t) (fused gate_up split in halves; fc1
    has no up)."""
    if "gate" in cur and "up" in cur:
        return cur["gate"][b, t].float(), cur["up"][b, t].float()
    if "gate_up" in cur:
        g, u = cur["gate_up"][b, t].float().chunk(2, -1)
        return g, u
    if "fc1" in cur:
        return cur["fc1"][b, t].float(), None
    return None, None


def _site_of(role: str) -> str:
    if role in ("q", "k", "v", "qkv"):
        return "attn_in"
    if role == "o":
        return "o_in"
    if role in ("down", "fc2"):
        return "down_in"
    return "mlp_in"
