"""The host-only capture of sysq 0.1 (main at f0555db: sysq/capture.py verbatim after this docstring), the oracle
that tests/test_sequential.py holds the device-resident sysq/capture.py to, report for report, to the last digit.
Not used by sysq itself; do not edit: it is the reference, not code to maintain."""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from sysq.arch import get_adapter
from sysq.errors import NonFiniteError

if TYPE_CHECKING:                       # detect/ imports this module: no import cycle at run time
    from sysq.detect.thresholds import Thresholds

SITES = ("attn_in", "o_in", "mlp_in", "down_in", "resid")
LINEAR_SITES = ("attn_in", "o_in", "mlp_in", "down_in")
MAX_EXAMPLES = 8
MAX_TRACKED = 64            # massive (token, channel) records per layer per batch kept for the lifecycle
ATTN_MAP_TOKENS = 48
GROWTH = 2.0                # a massive value that at least doubles in one layer is decomposed like a new one        # the attention map kept for plotting: first window, first 48 tokens


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


class SiteStats:
    """Running statistics of one activation tensor (one site of one layer) over all windows."""

    def __init__(self, layer: int, site: str, channels: int, abs_floor: float, th: Thresholds):
        self.layer, self.site, self.channels, self.abs_floor, self.th = layer, site, channels, abs_floor, th
        self.absmax = torch.zeros(channels)
        self.absmax_value = torch.zeros(channels)         # the signed value that set absmax
        self.absmax_window = torch.zeros(channels, dtype=torch.long)
        self.absmax_pos = torch.zeros(channels, dtype=torch.long)
        self.absmax_token = torch.zeros(channels, dtype=torch.long)
        self.abssum = torch.zeros(channels, dtype=torch.float64)
        self.int8_count = torch.zeros(channels, dtype=torch.long)     # windows with |x| >= int8 in the channel
        self.massive_count = torch.zeros(channels, dtype=torch.long)
        self.tokens = 0
        self.windows = 0
        self.median_sum = 0.0        # sums over windows of per-window median |h|, mean |h|, median token max
        self.mean_sum = 0.0
        self.tokmax_median_sum = 0.0
        self.top3_sum = torch.zeros(3, dtype=torch.float64)  # per-window top-1/2/3 |h| (Sun et al. Fig. 1)
        self.top = TopK(th.top_k)                              # largest token maxima
        self.hits = {"massive": TokenHits(), "token_mean_ratio": TokenHits(), "token_ratio": TokenHits()}

    def update(self, x: torch.Tensor, ids: torch.Tensor, window0: int, where: str):
        """Fold one batch [B, T, C] in. Returns (massive-token flags [B, T], token max |x| [B, T])."""
        x = x.detach().float()
        B, T, C = x.shape
        a = x.abs()
        # few full passes over [B, T, C]: everything else is derived from these small reductions
        # (amax, not max: the positions are looked up afterwards for the few entries that need them)
        wmax = a.amax(1)                            # [B, C] per-window channel max
        tok_max = a.amax(-1)                        # [B, T] per-token max
        wsum = a.sum(1, dtype=torch.float64)        # [B, C] (float64 since the fifth session: order-free)
        cmax, cwin = wmax.max(0)                    # [C] and the window holding it
        if not torch.isfinite(cmax).all():
            bad = int((~torch.isfinite(cmax)).sum())
            raise NonFiniteError(f"non-finite activations in {bad} channel(s) at layer {self.layer} {self.site} "
                                 f"({where}); check the model weights and dtype (try float32)")
        better = cmax > self.absmax
        if better.any():
            ch = better.nonzero().flatten()
            t = torch.zeros(C, dtype=torch.long)
            t[ch] = a[cwin[ch], :, ch].argmax(-1)   # the token holding each new channel max
            self.absmax = torch.where(better, cmax, self.absmax)
            self.absmax_value = torch.where(better, x[cwin, t, torch.arange(C)], self.absmax_value)
            self.absmax_window = torch.where(better, cwin + window0, self.absmax_window)
            self.absmax_pos = torch.where(better, t, self.absmax_pos)
            self.absmax_token = torch.where(better, ids[cwin, t], self.absmax_token)
        self.abssum += wsum.sum(0).double()
        if self.site != "resid":                    # windows where the channel reaches the LLM.int8 magnitude
            self.int8_count += (wmax >= self.th.int8).sum(0)
        self.tokens += B * T
        self.windows += B

        med = _median_estimate(a, self.th.median_samples)                  # [B] median |h| of each window
        mean = (wsum.sum(-1) / (T * C)).float()
        tok_med = tok_max.median(-1).values
        self.median_sum += float(med.double().sum())
        self.mean_sum += float(mean.double().sum())
        self.tokmax_median_sum += float(tok_med.double().sum())
        if self.site == "resid":                   # top-1/2/3 channel maxima per window (Sun et al. Fig. 1)
            self.top3_sum += wmax.topk(min(3, C), dim=-1).values.double().sum(0)

        massive_tok = (tok_max > self.abs_floor) & (tok_max >= self.th.massive_rel * med[:, None])
        if massive_tok.any():
            rows = massive_tok.nonzero()
            sub = a[rows[:, 0], rows[:, 1]]                                   # [n, C]
            mask = (sub > self.abs_floor) & (sub >= self.th.massive_rel * med[rows[:, 0]][:, None])
            self.massive_count += mask.sum(0)
        flags = {"massive": massive_tok,
                 "token_mean_ratio": tok_max > self.th.token_mean_ratio * mean[:, None],
                 "token_ratio": tok_max > self.th.token_ratio * tok_med[:, None]}
        for name, f in flags.items():
            if f.any():
                self.hits[name].add(_records(f.nonzero().tolist(), x, a, ids, window0))

        k = min(self.th.top_k, B * T)
        flat = torch.argsort(-tok_max.view(-1), stable=True)[:k]     # the largest, ties by (window, position)
        v = tok_max.view(-1)[flat]
        pairs = [(i // T, i % T) for i in flat.tolist()]
        self.top.push(v.tolist(), _records(pairs, x, a, ids, window0))
        return massive_tok, tok_max


def _median_estimate(a: torch.Tensor, samples: int) -> torch.Tensor:
    """Median of each window's |h| [B, T, C] from an evenly strided sample of about `samples` values
    (an exact median sorts the whole tensor; a 1000x-median test does not need that precision)."""
    flat = a.reshape(a.shape[0], -1)
    stride = max(1, flat.shape[1] // samples)
    while math.gcd(stride, a.shape[-1]) != 1:     # walk across channels, not down a fixed subset of them
        stride += 1
    return flat[:, ::stride].median(-1).values


def _records(pairs, x, a, ids, window0) -> list[dict]:
    out = []
    for b, t in pairs:
        c = int(a[b, t].argmax())
        out.append({"window": window0 + b, "pos": t, "token_id": int(ids[b, t]), "channel": c,
                    "value": float(x[b, t, c])})
    return out


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
    """Installs the hooks, runs batches, keeps the streamed statistics."""

    def __init__(self, model: nn.Module, th: Thresholds, attention: bool = True):
        self.model, self.th, self.attention = model, th, attention
        self.ad = get_adapter(model)
        L = self.ad.num_layers
        self.sites: dict[tuple[int, str], SiteStats] = {}
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
        self.window0_ids: torch.Tensor | None = None
        self.windows = 0
        self._handles = []
        self._cur: dict = {}
        self._ids = None
        self._window0 = 0
        self._flags_in = self._tokmax_in = None
        self._attention_now = attention

    # ---- running ------------------------------------------------------------------------------
    def attach(self) -> "Recorder":
        ad, reg = self.ad, self._handles
        seen_act = set()
        for i, layer in enumerate(ad.layers()):
            reg.append(layer.register_forward_pre_hook(self._layer_in(i), with_kwargs=True))
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
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._cur = {}

    @torch.no_grad()
    def run(self, ids: torch.Tensor, window0: int, attention: bool = True) -> None:
        """One batch of windows. attention=False: the model runs its own kernel (no probabilities), so the
        attention statistics and Q/K/V norms skip this batch."""
        # statistics live on the CPU whatever the model's device: hooks move what they keep (_host)
        self._ids, self._window0 = ids.cpu(), window0
        self._attention_now = attention and self.attention
        if self.window0_ids is None:
            self.window0_ids = self._ids[0, :ATTN_MAP_TOKENS].clone()
        try:
            base = getattr(self.model, "base_model", self.model)   # the logits are not needed
            base(input_ids=ids.to(self.model.device), use_cache=False)
        finally:
            self._cur = {}
            self._flags_in = self._tokmax_in = None
        self.windows += ids.shape[0]

    # ---- hooks --------------------------------------------------------------------------------
    def _btc(self, t: torch.Tensor) -> torch.Tensor:
        """[B, T, C] float32 CPU copy of a hidden tensor (OPT flattens tokens to [B*T, C] inside its layers)."""
        t = t if t.dim() == 3 else t.view(*self._ids.shape, -1)
        return _host(t)

    def _stats(self, i: int, site: str, x: torch.Tensor):
        key = (i, site)
        if key not in self.sites:
            floor = self.th.massive_abs if site == "resid" else self.th.input_abs
            self.sites[key] = SiteStats(i, site, x.shape[-1], floor, self.th)
        where = ", ".join(self.site_linears.get(key, [])) or f"output of decoder layer {i}"
        return self.sites[key].update(x, self._ids, self._window0, where)

    def _layer_in(self, i: int):
        def hook(mod, args, kwargs):
            h = self._btc(args[0] if args else kwargs["hidden_states"])
            self._cur = {"h_in": h}
            if i == 0:   # the embeddings: thresholds of the first layer's input, not kept as a site
                a = h.detach().float().abs()
                B = a.shape[0]
                med = _median_estimate(a, self.th.median_samples)
                tm = a.amax(-1)
                self._flags_in = (tm > self.th.massive_abs) & (tm >= self.th.massive_rel * med[:, None])
                self._tokmax_in = tm
        return hook

    def _site(self, i: int, site: str):
        def hook(mod, args):
            x = self._btc(args[0])
            self._stats(i, site, x)
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
            if not self._attention_now:
                return
            B, T, _ = out.shape
            hd = ad.head_dim
            if role == "qkv":
                q, k, v = out.split([ad.num_heads * hd, ad.num_kv_heads * hd, ad.num_kv_heads * hd], -1)
                parts = {"q": q, "k": k, "v": v}
            else:
                parts = {role: out}
            for r, t in parts.items():  # RoPE rotates pairs: per-head norms before RoPE equal those after
                self._cur["n" + r] = torch.linalg.vector_norm(t.detach().view(B, T, -1, hd), dim=-1,
                                                             dtype=torch.float64).mean(-1).float().cpu()
        return hook

    def _attn(self, i: int):
        st = self.attn[i]

        def hook(mod, args, out):
            w = out[1] if isinstance(out, tuple) and len(out) > 1 else None
            if w is None:
                return
            w = w.detach().float()
            B, H, Tq, T = w.shape
            recv = w.sum(2, dtype=torch.float64).cpu()         # [B, H, T] mass each key receives (float64)
            sink = (recv[..., 0] / Tq).float()                # [B, H] mean attention to position 0
            st.windows += B
            st.sink_sum += sink.double().sum(0)
            mean_recv = recv.mean(1).float()                  # [B, T] averaged over heads
            st.recv0_sum += float(mean_recv[:, 0].double().sum() / Tq)
            flags = mean_recv >= self.th.attention_share * Tq
            self._cur["att_flags"] = flags
            if flags.any():
                ids = self._ids
                st.outliers.add([{"window": self._window0 + b, "pos": t, "token_id": int(ids[b, t]),
                                  "mass": float(mean_recv[b, t])} for b, t in flags.nonzero().tolist()])
            if st.attn_map is None:
                h = int(sink[0].argmax())
                n = min(ATTN_MAP_TOKENS, T)
                st.attn_map, st.attn_map_head = _host(w[0, h, :n, :n]).clone(), h
        return hook

    def _layer_out(self, i: int):
        def hook(mod, args, out):
            h_out = self._btc(out[0] if isinstance(out, tuple) else out)
            flags_out, tokmax_out = self._stats(i, "resid", h_out)
            cur = self._cur
            self._lifecycle(i, cur, h_out, tokmax_out)
            self._consistency(i, cur)
            self._flags_in, self._tokmax_in = flags_out, tokmax_out
            self._cur = {}
        return hook

    def _consistency(self, i: int, cur: dict) -> None:
        act = self._flags_in
        if "att_flags" in cur:
            att = cur["att_flags"]
            s = self.seq[i]
            s[0] += int(act.sum())
            s[1] += int(att.sum())
            s[2] += int((act & att).sum())
        if all(k in cur for k in ("nq", "nk", "nv")):
            n = torch.stack([cur["nq"], cur["nk"], cur["nv"]], -1)   # [B, T, 3]
            q = self.qkv[i]
            q[0] += n[act].double().sum(0)
            q[1] += int(act.sum())
            q[2] += n[~act].double().sum(0)
            q[3] += int((~act).sum())

    def _lifecycle(self, i: int, cur: dict, h_out, tokmax_out) -> None:
        """Where the residual is large (|h| > massive_abs, the absolute half of the massive test, so an outlier
        is followed from birth to death even while the median keeps it under 1000x) before or after layer i:
        how the layer changed it."""
        floor = self.th.massive_abs
        rows = ((self._tokmax_in > floor) | (tokmax_out > floor)).nonzero()
        if rows.numel() == 0 or "h_mid" not in cur:
            return
        b, t = rows[:, 0], rows[:, 1]
        h_in, h_mid = cur["h_in"].detach().float()[b, t], cur["h_mid"].detach().float()[b, t]
        out = h_out.detach().float()[b, t]
        m_in, m_out = h_in.abs() > floor, out.abs() > floor
        hits = (m_in | m_out).nonzero()
        if hits.shape[0] > MAX_TRACKED:
            keep = torch.maximum(h_in.abs(), out.abs())[hits[:, 0], hits[:, 1]].topk(MAX_TRACKED).indices
            hits = hits[keep]
        life = self.life[i]
        w_down = self.ad.down(i).weight
        r, c = hits[:, 0], hits[:, 1]
        cols = zip(r.tolist(), c.tolist(), h_in[r, c].tolist(), h_mid[r, c].tolist(), out[r, c].tolist(),
                   b[r].tolist(), t[r].tolist(), self._ids[b[r], t[r]].tolist())   # one conversion, not per item
        for _, ch, vin, vmid, vout, bb, tt, tid in cols:
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
            if (born or vanish) and "down_in" in cur:
                self._decompose(life.emerge if born else life.cancel, key, bb, tt, vatt, vmlp, cur, w_down)

    def _decompose(self, into: dict, key, b: int, t: int, vatt: float, vmlp: float, cur: dict, w_down):
        """Split the MLP's write into channel c = key[0] at (b, t) into x_k * W_down[c, k]; keep the largest terms."""
        x = cur["down_in"].detach().float()[b, t]
        contrib = x * _host(w_down[key[0]])
        gate, up = _gate_up(cur, b, t)
        e = into.setdefault(key, {"count": 0, "attn": 0.0, "mlp": 0.0, "parts": {}})
        e["count"] += 1
        e["attn"] += vatt
        e["mlp"] += vmlp
        for k in contrib.abs().topk(min(4, contrib.numel())).indices.tolist():
            p = e["parts"].setdefault(k, [0, 0.0, 0.0, 0.0, 0.0])
            p[0] += 1
            p[1] += float(contrib[k])
            p[2] += float(x[k])
            p[3] += float(gate[k]) if gate is not None else float("nan")
            p[4] += float(up[k]) if up is not None else float("nan")


def _host(t: torch.Tensor) -> torch.Tensor:
    """float32 on the CPU, where the running statistics live (a no-op for a float32 CPU model)."""
    return t.detach().float().cpu()


def _gate_up(cur: dict, b: int, t: int):
    """The MLP's gate and up pre-activations at one token (fused gate_up split in halves; fc1 has no up)."""
    if "gate" in cur and "up" in cur:
        return cur["gate"][b, t].detach().float(), cur["up"][b, t].detach().float()
    if "gate_up" in cur:
        g, u = cur["gate_up"][b, t].detach().float().chunk(2)
        return g, u
    if "fc1" in cur:
        return cur["fc1"][b, t].detach().float(), None
    return None, None


def _site_of(role: str) -> str:
    if role in ("q", "k", "v", "qkv"):
        return "attn_in"
    if role == "o":
        return "o_in"
    if role in ("down", "fc2"):
        return "down_in"
    return "mlp_in"


class V1Recorder(Recorder):
    """The v1 Recorder behind today's detect() signature (snapshot and to_host are plot and placement details)."""

    chunks: tuple = ()          # v1 reduces each layer in its hooks: no chunks (detect's cost reads them)

    def __init__(self, model, th, attention=True, snapshot=False):
        super().__init__(model, th, attention)
        self.snapshots = {}
        self.tables = {}              # v1 keeps per-site tensors: nothing for detect's round_channels to do

    def start_to_host(self):          # host-only: nothing to queue, the conversion runs when detect asks for it
        return self.to_host

    def to_host(self) -> None:        # the report reads numpy arrays (the three window sums as one, rounded lists)
        import types

        from sysq.detect.activation import int8_top, round5, site_lists
        for s in self.sites.values():
            s.channel_absmax5 = round5(s.absmax)
            s.channel_absmean5 = round5(s.abssum / max(s.tokens, 1))
            for name, v in list(vars(s).items()):
                if isinstance(v, torch.Tensor):
                    setattr(s, name, v.numpy())
            s.window_sums = np.array([s.median_sum, s.mean_sum, s.tokmax_median_sum])
            # site_summary's lists (today's site_lists) from a one-row table of the site; round5 rounded every value
            host = {n: getattr(s, n)[None] for n in ("absmax", "massive_count", "int8_count")}
            host["int8_top"] = int8_top(torch.from_numpy(host["int8_count"])).numpy()
            for n in ("channel_absmax5", "channel_absmean5"):
                r = getattr(s, n)[None]
                host |= {n: r, n + "_ok": np.ones(r.shape, bool), n + "_x": r}
            s.row = 0
            site_lists([types.SimpleNamespace(host=host, sites=[s], channels=host["absmax"].shape[1])])

    def flush(self) -> None:          # v1 made its records inside run()
        pass
