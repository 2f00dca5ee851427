"""Forward hooks that stream outlier statistics, one batch of windows at a time.

Nothing of size [layers x tokens x channels] or [heads x T x T] survives a batch: the activations are reduced
to per-channel running maxima / sums, a few top values with their positions, token counters (bounded by the
vocabulary and the window length) and a handful of sparse records at the massive positions. So peak memory is one
chunk of layers' intermediates (CHUNK_BYTES; one layer on the CPU), whatever the number of windows.

Where the work happens: the running statistics stay on the device of the tensors they watch (the GPU, or each
layer's GPU when accelerate splits the model), and the hooks never wait for the device: no .item(), .tolist(),
bool(), nonzero or boolean-mask indexing of a device tensor inside a hook (tests/test_sequential.py makes each of
them raise there). The hooks keep references to what a decoder layer's statistics need; once the layers kept hold
CHUNK_BYTES, at the end of a batch, or when the next layer is on another device, the chunk is reduced with one set
of kernels for all its layers: its sites with one channel count stacked across the layers ([S, B, T, C]) and
reduced together (on CUDA one fused Triton pass per site tensor, read in place: reduce_fused; else stacked,
reduce_stacked) to per-channel statistics and a few fixed-size tensors ([windows x tokens]
maxima), the lifecycle's MAX_TRACKED candidates per layer with a device count, the attention mass, the Q/K/V norms
(so the kernels launched per batch hardly grow with depth; nothing the size of an activation outlives its chunk).
After a batch, its
reductions are folded into the running statistics, which live in one SiteTable per (channel count, device) with a
row per site, with one set of kernels per table (merge); what the host needs is copied in one copy per device and
dtype (pinned memory, queued behind the batch); the host turns it into records (token counters, top values,
lifecycle sums) through numpy, in hook order, while the device computes the next batch (the layers' host-share
hooks run a share each). The sequential pipeline flushes once per layer. On the CPU, the hooks use sparse forms
where reading a value costs nothing (Recorder.dense), a layer at a time; both forms give the same report.

Sites (per decoder layer):  attn_in (q/k/v input)  o_in  mlp_in (gate/up input)  down_in  resid (layer output)
"""
from __future__ import annotations

import contextlib
import math
import weakref
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .arch import get_adapter
from .attention_mass import AttentionMass
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
# dense forms: the activations the hooks keep for a chunk of layers before reducing them together (its stacks and
# temporaries take about as much again while it is reduced); on a GPU at most a quarter of its free memory
CHUNK_BYTES = 4 * 2**30


class TopK:
    """The k largest values seen so far, each with its record."""

    def __init__(self, k: int):
        self.k = k
        self.items: list[tuple[float, dict]] = []

    def push(self, values: list[float], records: list[dict]) -> None:
        self.items.extend(zip(values, records))
        self.items.sort(key=lambda it: -it[0])
        del self.items[self.k:]

    def keep(self, values: list[float]) -> list[int]:
        """push() in two halves, so only the records that stay are made: the values go in now (each new item holds
        its index in `values` for the record), the indices of those kept are returned, in item order; fill() puts
        their records in."""
        if self.items and len(self.items) >= self.k and (not values or max(values) <= self.items[-1][0]):
            return []                   # none beats the k-th: push() would sort every new one after the k kept
        self.push(values, range(len(values)))
        return [r for _, r in self.items if type(r) is int]

    def fill(self, records: list[dict]) -> None:
        """The records of keep()'s indices, in the order it returned them."""
        it = iter(records)
        self.items = [(v, next(it) if type(r) is int else r) for v, r in self.items]


@dataclass
class TokenHits:
    """Tokens flagged by one criterion at one site: counts by token id and position, a few examples."""

    count: int = 0
    ids: Counter = field(default_factory=Counter)          # token ids at positions > 0
    initial_ids: Counter = field(default_factory=Counter)  # token ids at position 0
    positions: Counter = field(default_factory=Counter)
    examples: list = field(default_factory=list)

    def add(self, records: list[dict]) -> None:
        n = self.add_tokens(*(np.array([r[k] for r in records], dtype=np.int64) for k in ("pos", "token_id")))
        self.examples.extend(records[:n])

    def add_tokens(self, pos: np.ndarray, tids: np.ndarray) -> int:
        """add() of records at positions `pos` with token ids `tids` (in record order), counted in one Counter.update
        each (the same keys in the same order: most_common's ties come out the same). Returns how many of the first
        records the examples still want (their records go in with examples.extend)."""
        self.count += len(pos)
        first = pos == 0
        self.initial_ids.update(tids[first].tolist())
        self.ids.update(tids[~first].tolist())
        self.positions.update(pos.tolist())
        return min(len(pos), MAX_EXAMPLES - len(self.examples))


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A host tensor copied to `device` behind the queued work, without waiting for it (CUDA: from pinned
    memory; the caching host allocator keeps the pinned block until the copy is done)."""
    device = torch.device(device)
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


@contextlib.contextmanager
def _windows_unpacked():
    """transformers looks for packed sequences in the position ids at each forward without a mask (a read of a
    device value: the host waits there for every queued kernel, here the previous batch's statistics, and the
    device then waits for the host). detect's windows are one sequence each (no mask, no position ids given:
    transformers' own arange), so the check's answer is known: no packing."""
    try:
        from transformers import masking_utils as mu
        check = mu.find_packed_sequence_indices
    except (ImportError, AttributeError):          # a transformers without the check
        yield
        return
    mu.find_packed_sequence_indices = lambda position_ids: None
    try:
        yield
    finally:
        mu.find_packed_sequence_indices = check


def to_host(tensors: list, numpy: bool = False) -> list:
    """The tensors on the CPU, copied together: one concatenation and one copy per device and dtype (a copy per
    tensor would wait on the device once per tensor). None entries and CPU tensors pass through. numpy=True: numpy
    views instead (one conversion per device and dtype; the report reads them without a torch call per value)."""
    host, events = start_to_host(tensors, numpy)
    for ev in events:
        ev.synchronize()
    return host


_COPY_STREAMS: dict = {}


def _copy_stream(device) -> "torch.cuda.Stream":
    """One stream per CUDA device for start_to_host's copies (made once)."""
    if device not in _COPY_STREAMS:
        _COPY_STREAMS[device] = torch.cuda.Stream(device)
    return _COPY_STREAMS[device]


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
            # on a side stream: the copy engine runs it beside the kernels queued after it (on the compute stream
            # the copies took 2.6 ms of an 8B detect's device time, call A18)
            side = _copy_stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                h = torch.empty(flat.shape, dtype=dtype, pin_memory=True).copy_(flat, non_blocking=True)
                ev = torch.cuda.Event()
                ev.record(side)
            flat.record_stream(side)            # flat's block is not reused before the copy has read it
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
    """The host work of one or more Pending copies: the callbacks in hook order, in segments, each segment's tensors
    on the host once its copy is done. step(n) runs the next n (all by default), waiting for each segment's copy
    when it reaches it (a segment copied early runs while later ones are still on their way)."""

    def __init__(self, segments: list[tuple[list, list, list]]):
        self.items = [it for items, _, _ in segments for it in items]
        self._segments = [(len(items), iter(host), events) for items, host, events in segments if items]
        self.done = 0
        self._at, self._left, self._host = -1, 0, iter(())   # the segment being run, its items left, its tensors

    def ready(self) -> bool:
        """Whether the next item's copy is done (no wait)."""
        at = self._at + (self._left == 0)
        return at >= len(self._segments) or all(ev.query() for ev in self._segments[at][2])

    def step(self, n: int | None = None) -> None:
        end = len(self.items) if n is None else min(len(self.items), self.done + n)
        while self.done < end:
            if self._left == 0:
                self._at += 1
                self._left, self._host, events = self._segments[self._at]
                for ev in events:
                    ev.synchronize()
            fn, ts = self.items[self.done]
            self.done += 1
            self._left -= 1
            fn(*[next(self._host) for _ in ts])


class Pending:
    """Host work on small tensors, in hook order: (callback, tensors). Work whose tensors are all on the CPU runs at
    once (there is no device to wait for); work on a device tensor waits for flush(), which copies every waiting
    tensor to the host at once (to_host) and runs the callbacks in order. Once one item waits, the later ones wait
    too, so the order holds. start() is flush() in two halves: the copy starts now, the callbacks run later;
    start_part() starts the copy of what waits so far (a chunk of layers), its callbacks running with start()'s."""

    defer = False     # True: CPU work waits for flush() too (what a run on a device does; tests and benchmarks)

    def __init__(self):
        self.items: list[tuple] = []
        self.started: list[tuple[list, list, list]] = []   # start_part's segments: (items, host tensors, events)

    def add(self, fn, *tensors) -> None:
        if not self.defer and not self.items and not self.started and \
                all(t is None or t.device.type == "cpu" for t in tensors):
            fn(*tensors)
        else:
            self.items.append((fn, tensors))

    def start_part(self) -> None:
        if self.items:
            items, self.items = self.items, []
            self.started.append((items, *start_to_host([t for _, ts in items for t in ts])))

    def start(self) -> Backlog:
        self.start_part()
        segments, self.started = self.started, []
        return Backlog(segments)

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
        self.massive: dict[int, np.ndarray] = {}    # layer -> [B, T] massive tokens of its output (-1: the input)
        self._on: dict = {}

    def ids_on(self, device) -> torch.Tensor:
        """The ids on `device`, copied once. A CUDA copy goes from pinned memory without a wait: a plain .to()
        waits for the work already queued (the batch's forward), and the device then idles while the host
        catches up."""
        device = torch.device(device)
        if device.type == "cpu":
            return self.ids
        if device not in self._on:
            self._on[device] = to_device(self.ids, device)
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
        self.host: dict[str, np.ndarray] = {}         # after Recorder.to_host: every statistic [rows, ...] on the host

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
    SiteTable. After Recorder.to_host its statistics are numpy arrays (that row of each SiteTable statistic; the
    report's rounded lists stay in the table's `host`, read per table by detect.activation.site_lists)."""

    def __init__(self, layer: int, site: str, channels: int, abs_floor: float, th: Thresholds, table: SiteTable):
        self.layer, self.site, self.channels, self.abs_floor, self.th = layer, site, channels, abs_floor, th
        # a weak reference: the table lists its sites, and a cycle would keep both (with the device statistics and
        # the pinned host copies they view) until a full garbage collection, not until the detect returns
        self._table, self.row = weakref.ref(table), table.add(self)
        self.tokens = 0
        self.windows = 0
        self.top = TopK(th.top_k)                              # largest token maxima
        self.hits = {"massive": TokenHits(), "token_mean_ratio": TokenHits(), "token_ratio": TokenHits()}

    @property
    def table(self) -> SiteTable:
        return self._table()

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
    wsum: torch.Tensor            # [S, B, C] float64 (any summation order gives the report's digits)
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
    wsum = a.sum(2, dtype=torch.float64)                    # [S, B, C]: float64, so the forms agree
    med = _median_estimate(a.flatten(0, 1), th.median_samples).float().view(S, B, 1, 1)
    mean = (wsum.sum(-1) / (T * C)).float()                 # [S, B]
    tok_med = tok_max.median(2).values                      # [S, B, 1]
    bad = (~torch.isfinite(wmax)).any(1).sum((-2, -1))     # [S] channels whose max is not finite
    # massive entries: |x| > floor and |x| >= massive_rel x the window's median; ">= r" is "> the float below r"
    thr = torch.maximum(torch.nextafter(th.massive_rel * med, below), floors)
    massive = (a > thr).sum(2, dtype=torch.int32)
    return (wmax, wsum, massive, med, mean, tok_med, widx, wval), (tok_max, tok_arg, tok_val, bad)


def fused(device) -> bool:
    """Whether a chunk's sites reduce with the fused Triton pass (reduce_fused) on `device`, else with the torch
    form (reduce_stacked): CUDA with Triton importable. SYSQ_REDUCE=torch forces the torch form (A/B);
    SYSQ_REDUCE=triton takes the fused pass on the CPU too, where only Triton's interpreter runs it
    (TRITON_INTERPRET=1, set before triton is imported: tests)."""
    import os
    from .quant.gemv import has_triton
    flag = os.environ.get("SYSQ_REDUCE", "auto")
    if flag == "torch" or not has_triton():
        return False
    if torch.device(device).type == "cpu":
        return flag == "triton" and os.environ.get("TRITON_INTERPRET") == "1"
    return torch.device(device).type == "cuda"


def reduce_fused(xs: list[torch.Tensor], floors: torch.Tensor, below: torch.Tensor, th: Thresholds) -> tuple:
    """reduce_stacked's outputs for S sites' [B, T, C] tensors of one shape, dtype and device, each read in place
    by one Triton pass (sysq/_reduce_triton.py: no stack, no |x|), then the partials reduced over token / channel
    blocks with a few torch ops for all S sites. The same values as reduce_stacked (maxima, first-index ties,
    counts exact; a NaN shows as an infinite maximum, still flagged); wsum adds in another order, in float64."""
    S, B = len(xs), xs[0].shape[0]
    med = _median_estimate_many(xs, th.median_samples).view(S, B, 1, 1)
    thr = torch.maximum(torch.nextafter(th.massive_rel * med, below), floors).view(S, B)
    (cmax, cidx, cval, csum, ccnt), (tmax, targ, tval) = _fused_partials(xs, thr, token_stats=True)
    T, C = xs[0].shape[1:]
    wmax, j = cmax.max(2, keepdim=True)                     # [S, B, 1, C]; the first block on ties (CUDA and CPU)
    widx, wval = cidx.gather(2, j).long(), cval.gather(2, j)
    tok_max, k = tmax.max(-1, keepdim=True)                 # [S, B, T, 1]
    tok_arg, tok_val = targ.gather(-1, k).long(), tval.gather(-1, k)
    wsum = csum.sum(2)                                      # [S, B, C] float64
    massive = ccnt.sum(2, dtype=torch.int32)
    mean = (wsum.sum(-1) / (T * C)).float()
    tok_med = tok_max.median(2).values
    bad = (~torch.isfinite(wmax)).any(1).sum((-2, -1))
    return (wmax, wsum, massive, med, mean, tok_med, widx, wval), (tok_max, tok_arg, tok_val, bad)


def column_stats(xs: list[torch.Tensor], maxima: bool = True, cache: dict | None = None) -> tuple:
    """Per column of S tensors [B, R, C] of one shape, dtype and device (a weight [1, out, in], attention
    probabilities [B * H, Tq, T]), over the rows, by the fused Triton pass: (max |x| [S, B, C] in x's dtype, the
    first row holding it [S, B, C] long, the float64 sum of |x| [S, B, C]); maxima=False: (None, None, the sum).
    Each tensor read once, in place. cache: a dict where the partial buffers (and their per-tensor views) are kept
    for the next call of this shape (a hook called once per layer: no allocation and no view op per call; the
    buffers are read before the call returns, and every later write to them is queued behind that read)."""
    S, B = len(xs), xs[0].shape[0]
    key = ("column_stats", S, tuple(xs[0].shape), xs[0].dtype, xs[0].device)
    inf = cache.get(key) if cache is not None else None
    if inf is None:
        inf = torch.full((S, B), math.inf, dtype=torch.float32, device=xs[0].device)     # no massive count
        if cache is not None:
            cache[key] = inf
    (cmax, cidx, _, csum, _), _ = _fused_partials(xs, inf, token_stats=False, maxima=maxima, cache=cache)
    if not maxima:
        return None, None, csum.sum(2)
    m, j = cmax.max(2, keepdim=True)                        # the first block on ties
    return m.squeeze(2), cidx.gather(2, j).squeeze(2).long(), csum.sum(2)


def _fused_partials(xs: list[torch.Tensor], thr: torch.Tensor, token_stats: bool, maxima: bool = True,
                    cache: dict | None = None) -> tuple:
    """The fused pass over each of S tensors [B, T, C] (thr [S, B]: each window's massive threshold): its partial
    buffers ((cmax, cidx, cval, csum, ccnt) [S, B, token programs, C], (tmax, targ, tval) [S, B, T, channel blocks]
    or Nones). maxima=False: only csum is sure to be written (the split / wide kernels skip the rest). Where the
    sites allow it (split: one shape and strides, 16-byte offsets) one launch per kernel takes them all; else one
    launch per site, with each buffer and thr split into its S sites' views with one op (unbind), made only then:
    on a GPU the host's time per op is what a chunk of small launches costs. cache: see column_stats."""
    from . import _reduce_triton as R
    S, (B, T, C), x0 = len(xs), xs[0].shape, xs[0]
    key = ("partials", S, tuple(x0.shape), x0.dtype, x0.device, token_stats, thr.data_ptr())
    if cache is not None and key in cache:
        col, tok, views = cache[key]
    else:
        ntb, ncb = R.token_programs(T), R.channel_blocks(C, x0.element_size())
        new = partial(torch.empty, device=x0.device)
        col = (new(S, B, ntb, C, dtype=x0.dtype), new(S, B, ntb, C, dtype=torch.int32),
               new(S, B, ntb, C, dtype=x0.dtype), new(S, B, ntb, C, dtype=torch.float64),
               new(S, B, ntb, C, dtype=torch.int32))
        tok = (new(S, B, T, ncb, dtype=x0.dtype), new(S, B, T, ncb, dtype=torch.int32),
               new(S, B, T, ncb, dtype=x0.dtype)) if token_stats else (None,) * 3
        views = [ntb, ncb, None]                            # per site: (thr, its 8 partial views), when needed
        if cache is not None:
            cache[key] = col, tok, views
    ntb, ncb = views[:2]
    # one launch per kernel for all S sites where they allow it: a detect's ~960 launches of ~40-80 us host time each
    # were its largest host cost (call D18, scripts/h200_session18/host_sections.py)
    offsets = R.group_offsets(xs) if thr.is_contiguous() else None
    if offsets is None and views[2] is None:
        per = [thr.unbind(0)] + [(None,) * S if p is None else p.unbind(0) for p in col + tok]
        views[2] = list(zip(*per))
    # Triton launches on the current CUDA device: that of the tensors (a model split over GPUs)
    with torch.cuda.device(x0.device) if x0.device.type == "cuda" else contextlib.nullcontext():
        if offsets is not None:
            R.launch_group(xs, to_device(torch.tensor(offsets, dtype=torch.int64), x0.device), thr, col, tok, ntb,
                           ncb, maxima)
        else:
            for x, (t, *parts) in zip(xs, views[2]):
                R.launch(x, t, tuple(parts), ntb, ncb, maxima)
    return col, tok


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
    wsum = a.sum(1, dtype=torch.float64)                                # [B, C]
    med = _median_estimate(a, th.median_samples).float()          # [B] median |h| of each window
    mean = (wsum.sum(-1) / (T * C)).float()
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
    # sums over windows in float64 (as every sum here): the same digits in any order, on any device
    st["window_sums"] += torch.stack([cat("med").flatten(1).double().sum(1), cat("mean").double().sum(1),
                                      cat("tok_med").flatten(1).double().sum(1)], 1)
    C = wmax.shape[-1]                             # top-1/2/3 channel maxima per window (Sun et al. Fig. 1)
    st["top3_sum"][:, :min(3, C)] += wmax.topk(min(3, C), dim=-1).values.double().sum(1)
    B, T = batch.ids.shape
    for s in sites:
        s.tokens += B * T
        s.windows += B


def _median_estimate(a: torch.Tensor, samples: int) -> torch.Tensor:
    """Median of each window's |h| [B, T, C] from an evenly strided sample of about `samples` values
    (an exact median sorts the whole tensor; a 1000x-median test does not need that precision)."""
    flat = a.reshape(a.shape[0], -1)
    return flat[:, ::_sample_stride(a.shape, samples)].median(-1).values


def _sample_stride(shape, samples: int) -> int:
    stride = max(1, math.prod(shape[1:]) // samples)
    while math.gcd(stride, shape[-1]) != 1:     # walk across channels, not down a fixed subset of them
        stride += 1
    return stride


def _median_estimate_many(xs: list[torch.Tensor], samples: int) -> torch.Tensor:
    """_median_estimate of |x| for S signed [B, T, C] tensors of one shape at once: [S, B] float32 (the samples
    are taken before |.|, the same values; one median for all). Each site's sample is one view (as_strided where
    its tokens and channels are contiguous, as a hidden state's are), then one stack."""
    B, T, C = xs[0].shape
    stride = _sample_stride(xs[0].shape, samples)
    n = -(-T * C // stride)

    def sample(x):
        if x.stride()[1:] == (C, 1):
            return x.as_strided((B, n), (x.stride(0), stride))
        return x.reshape(B, -1)[:, ::stride]
    return _stack([sample(x) for x in xs]).abs().median(-1).values.float()


def nonzero(a: np.ndarray) -> tuple[np.ndarray, ...]:
    """np.nonzero(a) of an n-d array, through its flat indices: the same index arrays, in the same order, ~10x
    faster (numpy's n-d nonzero of a [36, 8, 512] bool array: 0.35 ms, this: 0.02 ms on the CPU machine; and a
    bool array's flat nonzero is ~5x faster than an int64 one's)."""
    return np.unravel_index(np.flatnonzero(a if a.dtype == bool else a != 0), a.shape)


def largest_first_rows(key: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest of every row of key [R, n] in one set of numpy calls: (rows, cols) of the chosen, row after
    row, each row's largest first, ties by column (a stable sort's first k: lexsort is stable). Only the candidates
    at or above each row's k-th largest key are sorted."""
    R, n = key.shape
    if n > k:
        kth = np.partition(key, n - k, axis=1)[:, n - k]
        rows, cols = nonzero(key >= kth[:, None])
    else:
        rows, cols = np.divmod(np.arange(R * n), n)
    order = np.lexsort((-key[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    keep = np.arange(len(rows)) - np.searchsorted(rows, np.arange(R))[rows] < k
    return rows[keep], cols[keep]


def _records(batch: Batch, bs: np.ndarray, ts: np.ndarray, chans: list, values: list) -> list[dict]:
    """One record per (window in batch b, position t): its token, the channel of its max |x| and that value."""
    w0 = batch.window0
    return [{"window": w0 + b, "pos": t, "token_id": tid, "channel": c, "value": v}
            for b, t, tid, c, v in zip(bs.tolist(), ts.tolist(), batch.ids_np[bs, ts].tolist(), chans, values)]


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
        self.sink_np = self.sink_sum.numpy()    # the same memory: the host records add into it without a torch op


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
    # checks only: the hooks' tensors are copied to this device first, so a CPU forward's activations (the CPU
    # form's, to the bit) are reduced by a GPU's forms (scripts/check_detect_same.py --gpu)
    reduce_on: torch.device | str | None = None

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
        self._chunk: list[dict] = []         # the layers of the current batch whose reductions wait (dense forms)
        self._chunk_bytes = 0
        self._budgets: dict = {}              # device -> the chunk budget there (_budget)
        self.chunks: list[tuple[int, int]] = []   # (layers, bytes held) of each chunk reduced
        self._handles = []
        self._host_handles = []              # host-only work (the previous batch's records), no device tensors
        self._cur: dict = {}
        self.batch: Batch | None = None
        self._backlog: Backlog | None = None

    # ---- running ------------------------------------------------------------------------------
    def attach(self, layers=None) -> "Recorder":
        """Hook every decoder layer, or only `layers` (indices)."""
        ad, reg, decoder = self.ad, self._handles, self.ad.layers()
        seen_layers = []
        for i in range(ad.num_layers) if layers is None else layers:
            layer = decoder[i]
            reg.append(layer.register_forward_pre_hook(self._layer_in(i), with_kwargs=True))
            self._host_handles.append(layer.register_forward_pre_hook(self._host_share(len(seen_layers) + 1)))
            seen_layers.append(i)
            reg.append(layer.register_forward_hook(self._layer_out(i)))
            attn_in = ad.attn_inputs(i)
            reg.append(attn_in[0][1].register_forward_pre_hook(self._site(i, "attn_in")))
            for role, lin in attn_in:
                reg.append(lin.register_forward_hook(self._stash_qkv(role)))
            reg.append(ad.linears(i)["o"].register_forward_pre_hook(self._site(i, "o_in")))
            if self.attention:
                reg.append(ad.attention(i).register_forward_hook(self._attn(i)))
            reg.append(ad.mlp_norm(i).register_forward_pre_hook(self._stash_input("h_mid")))
            mlp_in = ad.mlp_inputs(i)
            reg.append(mlp_in[0][1].register_forward_pre_hook(self._site(i, "mlp_in")))
            for role, lin in mlp_in:
                reg.append(lin.register_forward_hook(self._stash_output(role)))
            reg.append(ad.down(i).register_forward_pre_hook(self._site(i, "down_in")))
            for p in layer.parameters():
                self._budget(p.device)
                break
        return self

    def detach(self) -> None:
        """Remove the hooks; the layers they kept are reduced (the sequential pipeline detaches, then flushes)."""
        self._close_chunk()
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
            with _windows_unpacked():
                base(input_ids=self.batch.ids_on(self.model.device), use_cache=False)
        except BaseException:
            self._chunk, self._chunk_bytes = [], 0
            raise
        finally:
            self._cur = {}
        self._close_chunk()
        self._step_backlog()                # what the hooks left of the previous batch's records
        self._merge()
        self._backlog = self.pending.start()

    def flush(self) -> None:
        """Fold the batches' reductions into the running statistics (merge_sites), then move what the hooks left
        on the device to the host and make the records (Pending)."""
        self._close_chunk()
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
        self.start_to_host()()

    def start_to_host(self):
        """to_host in two halves: the copy is queued now (behind the merges already queued); the returned function
        waits for it and sets the rows on the sites."""
        named = [(t, name, v) for t in self.tables.values() for name, v in (t.state | t.rounded).items()]
        host, events = start_to_host([v for *_, v in named], numpy=True)

        def finish() -> None:
            for ev in events:
                ev.synchronize()
            for (t, name, _), h in zip(named, host):
                t.host[name] = h
                if name in t.state:
                    for site in t.sites:
                        setattr(site, name, h[site.row])
        return finish

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
        t = t if t.dim() == 3 else t.view(*self.batch.ids.shape, -1)
        t = t.detach() if t.requires_grad else t          # under no_grad: no op to launch
        return t if self.reduce_on is None else t.to(self.reduce_on)

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
        """A float32 device tensor made once (one copy from pinned memory: no wait, one op)."""
        key = (device, values, shape)
        if key not in self._consts:
            self._consts[key] = to_device(torch.tensor(values, dtype=torch.float32), device).view(shape)
        return self._consts[key]

    def _reduce_sites(self, layers: list[dict], dense: bool) -> tuple[list, list, torch.Tensor | None]:
        """The sites of a chunk of layers of one batch: those with one channel count, device and dtype stacked
        across the layers into one [S, B, T, C] tensor (layer-major, the rows of their SiteTable) and reduced with
        one set of kernels (the device form), or one by one (the CPU form). Returns the host records' (meta,
        tensors): 7 tensors per group of stacked sites; and in the device form the layers' [L, B, T, 1] max |h| of
        each token of their outputs (the residual sites' rows, one slice where they are evenly spaced in one group,
        as every decoder stack has them; else None), for the lifecycle (_hits_dense)."""
        batch = layers[0]["batch"]
        groups: dict[tuple, list[tuple[SiteStats, torch.Tensor]]] = {}
        for cur in layers:
            by_key: dict[tuple, list] = {}
            for site, x in cur["sites"]:
                by_key.setdefault((x.shape[-1], x.device, x.dtype), []).append((site, x))
            for key, members in by_key.items():     # sites made in the order their rows merge
                groups.setdefault(key, []).extend((self._site_stats(cur["i"], site, x), x) for site, x in members)
        meta, tensors, resid_tok = [], [], None
        for (_, device, _), members in groups.items():
            sites = [s for s, _ in members]
            if dense:
                floors = self._const(device, tuple(s.abs_floor for s in sites), (-1, 1, 1, 1))
                below = self._const(device, (-math.inf,))
                if fused(device):
                    fields, rest = reduce_fused([x for _, x in members], floors, below, self.th)
                else:
                    fields, rest = reduce_stacked(_stack([x for _, x in members]), floors, below, self.th)
                tok_max, tok_arg, tok_val, bad = rest
                at = [k for k, s in enumerate(sites) if s.site == "resid"]
                step = at[1] - at[0] if len(at) > 1 else 1
                if len(at) == len(layers) and at == list(range(at[0], at[0] + step * len(at), step)):
                    resid_tok = tok_max[at[0]::step]
                self._reduced.append(Reduced(sites, batch, *fields))
                meta.append((sites, None))
                # the host reads them in float32 (_flag_group): converted here, where it costs a few tiny kernels,
                # not there, where each .float() of a host tensor took ~0.4 ms on the H200 host (cProfile, call H10)
                tensors += [tok_max.float(), fields[3], fields[4], fields[5].float(), bad, tok_arg, tok_val.float()]
            else:
                for s, x in members:
                    fields, (tok_max, lookup, bad) = reduce_sparse(s, x, self.th)
                    self._reduced.append(Reduced([s], batch, **fields))
                    meta.append(([s], lookup))
                    tensors += [tok_max, fields["med"], fields["mean"], fields["tok_med"], bad, None, None]
        return meta, tensors, resid_tok

    def _nonfinite(self, meta: list, parts: list) -> None:
        """The first site (in forward order) whose channel maxima are not all finite: a NonFiniteError."""
        bad = [((s.layer, SITES.index(s.site)), s, n) for (sites, _), p in zip(meta, parts)
               for s, n in zip(sites, p[4].tolist())]
        for _, s, n in sorted(bad, key=lambda e: e[0]):
            if n:
                where = ", ".join(self.site_linears.get((s.layer, s.site), [])) or f"output of decoder layer {s.layer}"
                raise NonFiniteError(f"non-finite activations in {n} channel(s) at layer {s.layer} {s.site} ({where}); "
                                     f"check the model weights and dtype (try float32)")

    def _flag_group(self, batch: Batch, sites: list[SiteStats], lookup, tok_max, med, mean, tok_med, tok_arg,
                    tok_val) -> None:
        """[S, B, T] token maxima of S sites, in numpy (float32 arrays compared with Python floats in float32, as
        torch does): the flagged tokens and the largest maxima (largest_first_rows, all sites at once: ties by window
        and position, the same on every device; torch's CPU topk ordered ties its own way). lookup(b, t) (one site),
        or tok_arg / tok_val, give the channels of those tokens' max |x| and the values there. Records (dicts) are
        made only where they are kept (a site's first MAX_EXAMPLES hits per criterion, its top values), all of the
        group's at once; the hits are counted from the index arrays (TokenHits.add_tokens). The residual's massive
        tokens go to the batch (the next layer's input)."""
        th = self.th
        tm = tok_max.float().numpy()
        S, B = tm.shape[:2]
        tm, tmed = tm.reshape(S, B, -1), tok_med.float().numpy().reshape(S, B)
        med, mean = med.numpy().reshape(S, B), mean.numpy()
        T = tm.shape[-1]
        floors = np.array([s.abs_floor for s in sites], dtype=tm.dtype)[:, None, None]
        massive_tok = (tm > floors) & (tm >= th.massive_rel * med[..., None])
        flags = {"massive": massive_tok,
                 "token_mean_ratio": tm > th.token_mean_ratio * mean[..., None],
                 "token_ratio": tm > th.token_ratio * tmed[..., None]}
        if lookup is None:
            ta, tv = tok_arg.numpy().reshape(S, B, T), tok_val.float().numpy().reshape(S, B, T)

            def chans(ks, bs, ts) -> tuple[list, list]:
                return ta[ks, bs, ts].tolist(), tv[ks, bs, ts].tolist()
        else:
            def chans(ks, bs, ts) -> tuple[list, list]:
                return lookup(bs.tolist(), ts.tolist())
        # the records are made only where they are kept (a site's first MAX_EXAMPLES hits, its top values), all
        # at once at the end: want[k] = (site indices, windows, positions) and where their records go
        want: list[tuple] = []
        for name, f in flags.items():
            ks, bs, ts = nonzero(f)
            if len(ks):
                tids = batch.ids_np[bs, ts]
                ends = np.searchsorted(ks, np.arange(S + 1)).tolist()
                for k in np.unique(ks).tolist():
                    lo, hi = ends[k], ends[k + 1]
                    hits = sites[k].hits[name]
                    n = hits.add_tokens(ts[lo:hi], tids[lo:hi])
                    if n:
                        want.append((ks[lo:lo + n], bs[lo:lo + n], ts[lo:lo + n], hits.examples.extend))
        flat = tm.reshape(S, -1)
        ks, js = largest_first_rows(flat, th.top_k)
        values = flat[ks, js].tolist()
        ends = np.searchsorted(ks, np.arange(S + 1)).tolist()
        for k, site in enumerate(sites):
            kept = site.top.keep(values[ends[k]:ends[k + 1]])
            if kept:
                j = js[ends[k] + np.asarray(kept)]
                want.append((ks[ends[k]:ends[k] + len(kept)], j // T, j % T, site.top.fill))
        if want:
            ks, bs, ts = (np.concatenate([w[i] for w in want]) for i in range(3))
            recs, at = _records(batch, bs, ts, *chans(ks, bs, ts)), 0
            for w in want:
                w[3](recs[at:at + len(w[0])])
                at += len(w[0])
        for k, s in enumerate(sites):
            if s.site == "resid":
                batch.massive[s.layer] = massive_tok[k]

    def _dense(self, x: torch.Tensor) -> bool:
        return x.device.type != "cpu" if self.dense is None else self.dense

    def _layer_in(self, i: int):
        def hook(mod, args, kwargs):
            h = self._btc(args[0] if args else kwargs["hidden_states"])
            self._cur = {"i": i, "batch": self.batch, "h_in": h, "sites": []}
            if i == 0:   # the embeddings: thresholds of the first layer's input, not kept as a site
                a = h.abs()
                med = _median_estimate(a, self.th.median_samples).float()
                self.pending.add(partial(self._input_flags, self.batch), a.amax(-1).float(), med)
        return hook

    def _input_flags(self, batch: Batch, tm, med) -> None:
        tm, med = tm.numpy(), med.numpy()      # float32: compared with Python floats in float32, as torch does
        batch.massive[-1] = (tm > self.th.massive_abs) & (tm >= self.th.massive_rel * med[:, None])

    def _site(self, i: int, site: str):
        def hook(mod, args):
            x = self._btc(args[0])
            self._cur["sites"].append((site, x))
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

    def _stash_qkv(self, role: str):
        """The q/k/v projection's output, for the per-head norms (made for the whole chunk in _qkv_norms)."""
        def hook(mod, args, out):
            if self.batch.attention:
                self._cur["proj_" + role] = self._btc(out)
        return hook

    def _attn(self, i: int):
        st = self.attn[i]

        def hook(mod, args, out):
            w = out[1] if isinstance(out, tuple) and len(out) > 1 else None
            if w is None:
                return
            B, H, Tq, T = w.shape
            n = min(ATTN_MAP_TOKENS, T)
            if isinstance(w, AttentionMass):                  # sysq_mass: from Q and K, no probabilities
                self._cur["recv"] = w.received()
                corner = None if st.map_requested else w.corner(n)
            else:
                # [B, H, T] mass each key receives, in float64 (every summation order, CPU or GPU, gives the same
                # float32 below): on CUDA read once by the fused pass (torch's float64 sum copies w to float64 first)
                self._cur["recv"] = column_stats([w.flatten(0, 1)], False, self._consts)[2].view(B, H, T) \
                    if fused(w.device) else w.sum(2, dtype=torch.float64)
                # one view op and one copy (w[0, :, :n, :n].float() is four ops, and no copy in float32)
                corner = None if st.map_requested else \
                    w.as_strided((H, n, n), w.stride()[1:], w.storage_offset()).to(torch.float32, copy=True)
            self._cur["Tq"] = Tq
            if corner is not None:                            # every head of the first window; the host picks one
                self._cur["amap"], st.map_requested = corner, True
            st.windows += B
        return hook

    def _layer_out(self, i: int):
        def hook(mod, args, out):
            cur, self._cur = self._cur, {}
            h_out = self._btc(out[0] if isinstance(out, tuple) else out)
            cur["h_out"] = h_out
            cur["sites"].append(("resid", h_out))
            dense = self._dense(h_out)
            if self._chunk and (self._chunk[0]["batch"] is not cur["batch"]
                                or self._chunk[0]["h_out"].device != h_out.device):
                self._close_chunk()
            self._chunk.append(cur)
            held = _held(cur)
            cur["bytes"] = sum(t.numel() * t.element_size() for t in held)
            if dense:       # checked when the chunk is reduced: a tensor changed in place since would be misread
                cur["versions"] = [(t, t._version) for t in held + [cur["h_in"]]]
                self._chunk_bytes += cur["bytes"]
            if not dense or self._chunk_bytes >= self._budget(h_out.device):
                self._close_chunk()
        return hook

    def _budget(self, device) -> int:
        """CHUNK_BYTES, or a quarter of the GPU's free memory when that is less (asked once per detect and device,
        when attached: a query of the allocator, no wait for the device)."""
        if device not in self._budgets:
            free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else CHUNK_BYTES * 4
            self._budgets[device] = min(CHUNK_BYTES, free // 4)
        return self._budgets[device]

    def _close_chunk(self) -> None:
        """Reduce the chunk of layers the hooks kept (one batch, one device): their sites stacked per group
        (_reduce_sites), the lifecycle's hits, the attention mass and the Q/K/V norms, each with one set of kernels
        for all the layers in the device form; the chunk's host records are one callback. The CPU form closes
        every layer's chunk at once."""
        layers, self._chunk, self._chunk_bytes = self._chunk, [], 0
        if not layers:
            return
        for cur in layers:
            for t, v in cur.get("versions", ()):
                if t._version != v:
                    raise AssertionError(f"capture: a tensor of layer {cur['i']} changed in place before its "
                                         f"statistics were taken; the dense forms need it unchanged")
        held = sum(c["bytes"] for c in layers)
        self.chunks.append((len(layers), held))
        batch, dense = layers[0]["batch"], self._dense(layers[0]["h_out"])
        if not dense and len(layers) > 1:
            raise AssertionError("capture: the CPU form reduces one layer at a time")
        meta, tensors, resid_tok = self._reduce_sites(layers, dense)
        h_in, h_out, chain = _residuals(layers)
        life = self._hits_dense(layers, h_in, h_out, chain, resid_tok) if dense else self._hits_sparse(layers[0])
        att_rows, Tq, att = self._attention(layers)
        norms = self._qkv_norms(layers)
        snap = h_out[:, 0, :SNAPSHOT_TOKENS].abs().float() if self.snapshot and batch.window0 == 0 else None
        amaps = [c.get("amap") for c in layers]
        if len(amaps) > 1 and all(a is not None for a in amaps):    # one tensor to copy, not one per layer
            amaps = [_stack(amaps)]
        self.pending.add(partial(self._chunk_records, batch, [c["i"] for c in layers], meta, len(tensors), att_rows,
                                 Tq), *tensors, *life, *att, norms, snap, *amaps)
        if dense:
            # the chunk's copy queued now, behind its kernels: the last batch's records are made chunk by chunk
            # while the device runs the later layers, not all after the forward (E17: 14 ms with the device idle)
            self.pending.start_part()

    def _chunk_records(self, batch: Batch, layers: list[int], meta: list, n_sites: int, att_rows: list, Tq: int,
                       *tensors) -> None:
        """Host part of a chunk: the non-finite check (in forward order), the sites' token records, then per
        layer the attention records, the lifecycle and the consistency. Host tensors are read through numpy (a
        torch read here would be a wait for the device if it were a device tensor)."""
        parts = [tensors[k:k + 7] for k in range(0, n_sites, 7)]
        count, hits, values, terms_k, terms, sink, mean_recv, att_flags, norms, snap = tensors[n_sites:n_sites + 10]
        amaps = tensors[n_sites + 10:]
        amaps = list(amaps[0]) if len(amaps) == 1 and len(layers) > 1 else amaps    # stacked: one per layer
        self._nonfinite(meta, parts)
        for (sites, lookup), (tok_max, med, mean, tok_med, _, tok_arg, tok_val) in zip(meta, parts):
            self._flag_group(batch, sites, lookup, tok_max, med, mean, tok_med, tok_arg, tok_val)
        count, hits, values, terms_k, terms, att_np, norms = (None if t is None else t.numpy() for t in
                                                              (count, hits, values, terms_k, terms, att_flags, norms))
        if sink is not None:    # the sums of all the chunk's layers at once (the same digits as layer by layer)
            att = (sink.double().sum(1).numpy(), (mean_recv[:, :, 0].double().sum(1) / Tq).numpy(), sink.numpy(),
                   mean_recv.numpy())
        snaps = None if snap is None else snap.unbind(0)
        for l, i in enumerate(layers):
            r = att_rows[l]
            if r is not None:
                self._attn_records(self.attn[i], batch, *(a[r] for a in att), att_np[r], amaps[l])
            if hits is not None:
                life = tuple(None if t is None else t[l] for t in (hits, values, terms_k, terms))
                life = life if count is None else self._select_hits(count[l], *life)
                if life is not None:
                    self._lifecycle(i, batch, *life)
            self._consistency(i, batch.massive.pop(i - 1), None if r is None else att_np[r],
                              None if norms is None else norms[l])
            if snaps is not None:
                self.snapshots[i] = snaps[l]

    def _attn_records(self, st: AttentionStats, batch: Batch, sink_sum: np.ndarray, recv0: np.float64,
                      sink: np.ndarray, mean_recv: np.ndarray, flags: np.ndarray, amap) -> None:
        """One layer's attention records from numpy (host) arrays: sink_sum [H] its float64 sum over the windows
        of the mass to position 0, recv0 the float64 sum over the windows of the mass position 0 receives / Tq,
        sink [B, H], mean_recv [B, T], flags [B, T]."""
        st.sink_np += sink_sum                      # in place (sink_sum's memory), in numpy: no torch op per layer
        st.recv0_sum += float(recv0)
        b, t = nonzero(flags)
        if len(b):
            tids = batch.ids_np[b, t]
            n = st.outliers.add_tokens(t, tids)     # records for the examples only
            b, t = b[:n], t[:n]
            st.outliers.examples.extend([{"window": batch.window0 + bb, "pos": tt, "token_id": tid, "mass": m}
                                         for bb, tt, tid, m in zip(b.tolist(), t.tolist(), tids[:n].tolist(),
                                                                   mean_recv[b, t].tolist())])
        if amap is not None:
            h = int(sink[0].argmax())
            st.attn_map, st.attn_map_head = amap[h].clone(), h

    def _consistency(self, i: int, act: np.ndarray, att: np.ndarray | None, n: np.ndarray | None) -> None:
        """act: massive tokens of layer i's input; att: its attention-outlier keys; n: [B, T, 3] mean per-head
        norms of q, k, v."""
        m = int(np.count_nonzero(act))
        if att is not None:
            s = self.seq[i]
            s[0] += m
            s[1] += int(np.count_nonzero(att))
            s[2] += int(np.count_nonzero(act & att))
        if n is not None:
            q = self.qkv[i]                    # the sums in torch, as before
            q[0] += torch.from_numpy(n[act]).double().sum(0)
            q[1] += m
            q[2] += torch.from_numpy(n[~act]).double().sum(0)
            q[3] += act.size - m

    def _attention(self, layers: list[dict]) -> tuple[list, int, tuple]:
        """The attention mass of the chunk's layers that have probabilities, stacked: (row of each layer or
        None, query length, (sink [La, B, H] mean mass to position 0, mean_recv [La, B, T] mass each key receives averaged over
        heads, flags [La, B, T] keys receiving >= attention_share x Tq))."""
        rows, recv = [], []
        for c in layers:
            rows.append(len(recv) if "recv" in c else None)
            if "recv" in c:
                recv.append(c["recv"])
        if not recv:
            return rows, 0, (None, None, None)
        recv = _stack(recv)
        Tq = layers[rows.index(0)]["Tq"]
        sink = (recv[..., 0] / Tq).float()
        mean_recv = recv.mean(2).float()
        return rows, Tq, (sink, mean_recv, mean_recv >= self.th.attention_share * Tq)

    def _qkv_norms(self, layers: list[dict]) -> torch.Tensor | None:
        """[L, B, T, 3]: the mean over heads of the per-head norms of q, k and v at each token (RoPE rotates pairs:
        the norms before RoPE equal those after); None unless every layer has all three."""
        ad = self.ad
        widths = [ad.num_heads * ad.head_dim, ad.num_kv_heads * ad.head_dim, ad.num_kv_heads * ad.head_dim]
        if all("proj_qkv" in c for c in layers):
            per_layer = [c["proj_qkv"].split(widths, -1) for c in layers]
        elif all(f"proj_{r}" in c for c in layers for r in "qkv"):
            per_layer = [[c[f"proj_{r}"] for r in "qkv"] for c in layers]
        else:
            return None
        x0 = per_layer[0][0]
        if fused(x0.device):        # each projection read in place, no float64 copy of the stack (_norms_triton)
            from ._norms_triton import qkv_norms_into
            out = torch.empty(len(layers), *x0.shape[:2], 3, dtype=torch.float32, device=x0.device)
            for o, (q, k, v) in zip(out.unbind(0), per_layer):
                qkv_norms_into(q, k, v, ad.head_dim, o)
            return out
        parts = [_stack(list(ps)) for ps in zip(*per_layer)]
        L, B, T = parts[0].shape[:3]
        # norms in float64, rounded once to float32: the same digits whatever order a device sums in
        return torch.stack([torch.linalg.vector_norm(p.reshape(L, B, T, -1, ad.head_dim), dim=-1,
                                                     dtype=torch.float64).mean(-1).float() for p in parts], -1)

    def _hits_sparse(self, cur: dict) -> tuple:
        """The CPU form of the lifecycle's hits of one layer (see _hits_dense): exactly the hits, in position
        order, [1, ...]-shaped like the device form; count None."""
        none = (None,) * 5
        if "h_mid" not in cur:
            return none
        floor = self.th.massive_abs
        # the input may arrive from the previous layer's device (a model split by accelerate): the pre-hook sees it
        # before accelerate moves it
        h_in, h_mid, h_out = _on(cur["h_in"], cur["h_out"].device), cur["h_mid"], cur["h_out"]
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
            return None, hits[None], values[None], None, None
        x = cur["down_in"][b, t].float()                                   # [m, I]
        contrib = x * self.ad.down(cur["i"]).weight[c].float()
        k = contrib.abs().topk(min(4, contrib.shape[-1]), dim=-1).indices  # [m, K]
        gate, up = _gate_up([cur], lambda g: g[0][b, t])
        terms = _terms(contrib, x, gate, up, k)
        return None, hits[None], values[None], k[None], terms[None]

    def _hits_dense(self, layers: list[dict], h_in: torch.Tensor, h_out: torch.Tensor, chain, resid_tok) -> tuple:
        """The lifecycle's device part for a chunk of layers at once: where the residual is large (|h| >
        massive_abs, the absolute half of the massive test, so an outlier is followed from birth to death even while
        the median keeps it under 1000x) before or after each layer, MAX_TRACKED fixed (token, channel) candidates
        per layer, best first, and `count` [L] (how many are hits, up to MAX_TRACKED + 1; the host keeps those,
        _select_hits), with the layer's values there and the largest terms of the MLP's write. Kept when there are
        more: the largest max(|h_in|, |h_out|), the first position on ties. resid_tok: [L, B, T, 1] max |h_out| of
        each token (the residual sites' reductions) or None. No pass over the whole residuals but the stack (and
        one max |h_in| per token of the chunk's first input): the candidates come from the best tokens' rows.
        Returns (count [L], hits [L, m, 3] (b, t, c), values [L, m, 3] (h_in, h_mid, h_out), term columns [L, m, K],
        terms [L, m, K, 4] (x_k * W[c, k], x_k, gate_k, up_k)) or Nones. No wait for the device anywhere."""
        if not all("h_mid" in c for c in layers):
            return (None,) * 5
        L, B, T, C = h_out.shape
        # a position is a hit when max(|h_in|, |h_out|) > floor (either one is); each token's largest score from
        # the residual sites' token maxima (chained: layer l's input is layer l - 1's output)
        if resid_tok is None:
            resid_tok = h_out.abs().amax(-1, keepdim=True)
        first = (h_in[:1] if chain is not None else h_in).abs().amax(-1, keepdim=True)
        tok = torch.maximum(torch.cat([first, resid_tok[:-1]]) if chain is not None else first, resid_tok)
        count, flat, v_in, v_out = self._top_positions(h_in.reshape(L, B * T, C), h_out.reshape(L, B * T, C),
                                                       tok.view(L, B * T), MAX_TRACKED)
        bt = flat // C
        hits = torch.stack([bt // T, bt % T, flat % C], 2)
        bs, ts_, cs = (h.unbind(0) for h in hits.unbind(2))
        # each layer's mid residual read where it is, one index op each (stacking them copied 8 x 33.5 MB a chunk
        # at the 8B shape)
        v_mid = _stack([c["h_mid"][b, tt, cc] for c, b, tt, cc in zip(layers, bs, ts_, cs)])
        values = torch.stack([v_in, v_mid, v_out], 2).float()
        if not all("down_in" in c for c in layers):
            return count, hits, values, None, None
        # the MLP's write into channel c at (b, t) split into x_k * W_down[c, k]; the largest terms

        def rows(ts):       # [L, m, I] the rows (b, t) of each layer's [B, T, I] tensor: one op each, no stacked copy
            return _stack([t[b, tt] for t, b, tt in zip(ts, bs, ts_)])
        x = rows([c["down_in"] for c in layers]).float()                               # [L, m, I]
        w = [self.ad.down(c["i"]).weight for c in layers]
        w = _stack([wi.index_select(0, _on(cc, wi.device)) for wi, cc in zip(w, cs)])
        contrib = x * _on(w.float(), x.device)      # the weights are on x's device (Recorder.reduce_on aside)
        k = contrib.abs().topk(min(4, contrib.shape[-1]), dim=-1).indices                # [L, m, K]
        gate, up = _gate_up(layers, rows)
        return count, hits, values, k, _terms(contrib, x, gate, up, k)

    def _top_positions(self, h_in: torch.Tensor, h_out: torch.Tensor, tok: torch.Tensor, k: int) -> tuple:
        """Per layer of [L, N, C] inputs and outputs (N tokens), scored by max(|h_in|, |h_out|) at each position,
        with tok [L, N] each token's largest score: how many positions score > massive_abs (up to k + 1: the host
        needs only whether more than k do), the flat indices (token * C + channel) of k candidates, best first (the
        hits by score, the first position on ties, then non-hits), and h_in and h_out there ([L, k] each). Ordered
        by one int64 key per position: the score's float32 bits (monotonic for scores >= 0) above 2^32 - 1 - the
        flat index, non-hits below every hit. Not over every position: the best k + 1 lie in the k + 1 tokens
        whose largest score ranks highest (ordered the same way: each token ranking above a hit's token holds a
        position ranking above the hit), so only those tokens' rows are read."""
        L, N, C = h_out.shape
        floor = self.th.massive_abs
        tkey = tok.float().view(torch.int32).long().mul_(2**32).add_(self._reversed(tok.device, (N,)))
        top = tkey.topk(min(k + 1, N), dim=-1).indices                                 # [L, kt]
        at = top[..., None].expand(-1, -1, C)
        r_in, r_out = h_in.gather(1, at), h_out.gather(1, at)                          # [L, kt, C]
        rows = torch.maximum(r_in.abs(), r_out.abs())
        rev = self._reversed(tok.device, (C,)) - top[..., None] * C                      # 2^32 - 1 - flat index
        key = rows.float().view(torch.int32).long().mul_(2**32)
        key.masked_fill_((rows > floor).logical_not_(), -2**32).add_(rev)
        best = key.view(L, -1).topk(min(k + 1, key[0].numel()), dim=-1)
        count = (best.values >= 0).sum(1)               # hits: key >= 2^32 (non-hits: -2^32 + rev < 0)
        j = best.indices[:, :k]
        return (count, (2**32 - 1) - rev.view(L, -1).gather(1, j), r_in.view(L, -1).gather(1, j),
                r_out.view(L, -1).gather(1, j))

    def _reversed(self, device, shape: tuple) -> torch.Tensor:
        """2^32 - 1 - flat index over `shape`, int64 on the device, made once."""
        key = (device, "reversed", shape)
        if key not in self._consts:
            n = math.prod(shape)
            self._consts[key] = torch.arange(2**32 - 1, 2**32 - 1 - n, -1, device=device).view(shape)
        return self._consts[key]

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


def _gate_up(layers: list[dict], rows) -> tuple:
    """The MLP's gate and up pre-activations at the hits, float32 (fused gate_up split in halves; fc1 has no up);
    rows(the layers' [B, T, I] tensors) picks the hits' rows."""
    c0 = layers[0]
    if "gate" in c0 and "up" in c0:
        return rows([c["gate"] for c in layers]).float(), rows([c["up"] for c in layers]).float()
    if "gate_up" in c0:
        return rows([c["gate_up"] for c in layers]).float().chunk(2, -1)
    if "fc1" in c0:
        return rows([c["fc1"] for c in layers]).float(), None
    return None, None


def _terms(contrib, x, gate, up, k) -> torch.Tensor:
    """[..., K, 4]: the terms x_k * W_down[c, k], x_k, gate_k, up_k at the columns k (NaN where the MLP has no
    gate or up)."""
    if gate is None or up is None:
        nan = torch.full_like(contrib, float("nan"))
        gate, up = nan if gate is None else gate, nan if up is None else up
    return torch.stack([v.gather(-1, k) for v in (contrib, x, gate, up)], -1)


def _residuals(layers: list[dict]) -> tuple:
    """The chunk's layer inputs and outputs [L, B, T, C] on the last layer's device (the first input may arrive
    from the previous layer's device: accelerate). Where each layer's input is the previous one's output (every
    decoder stack), one stack of the L + 1 residuals, returned as the third value, of which both are views."""
    dev = layers[-1]["h_out"].device
    ins = [_on(c["h_in"], dev) for c in layers]
    outs = [c["h_out"] for c in layers]
    if len(layers) > 1 and all(_same(i, o) for i, o in zip(ins[1:], outs[:-1])):
        chain = torch.stack([ins[0]] + outs)
        return chain[:-1], chain[1:], chain
    return _stack(ins), _stack(outs), None


def _on(t: torch.Tensor, device) -> torch.Tensor:
    """t on `device`; no op launched where it is there already."""
    return t if t.device == device else t.to(device)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same values by construction: one storage, offset, shape, strides and dtype."""
    return (a.data_ptr(), a.shape, a.stride(), a.dtype, a.device) == (b.data_ptr(), b.shape, b.stride(), b.dtype,
                                                                      b.device)


def _stack(ts: list[torch.Tensor]) -> torch.Tensor:
    return ts[0][None] if len(ts) == 1 else torch.stack(ts)


def _held(cur: dict) -> list[torch.Tensor]:
    """The tensors a layer's record keeps alive until its chunk is reduced, each storage once (its input is the
    previous layer's output: not counted)."""
    seen, out = set(), []
    for k, v in cur.items():
        for t in [x for _, x in v] if k == "sites" else [v] if isinstance(v, torch.Tensor) and k != "h_in" else []:
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                out.append(t)
    return out


def _site_of(role: str) -> str:
    if role in ("q", "k", "v", "qkv"):
        return "attn_in"
    if role == "o":
        return "o_in"
    if role in ("down", "fc2"):
        return "down_in"
    return "mlp_in"
