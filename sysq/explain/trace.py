"""One forward pass under hooks, reduced per layer to what the interventions compare, and the running sums
(:class:`RunStats`) that turn many passes into per-layer numbers.

Per decoder layer and token: the massive test on the layer output (Sun et al.: |h| > massive_abs and >=
massive_rel x the window's median |h|), |h| of the dominant channels, the norms of the input and of the
attention and MLP updates to the residual stream; per head and query: the attention mass on the anchor keys
(the outlier tokens) and the norm of that head's write into the residual stream (its slice of o_proj).

Anchors are given per window in query coordinates ([B, T] bool). When the keys outnumber the queries (a fixed
prefix, as in the anchor-bias model), the extra leading keys count as anchors.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..arch import get_adapter
from ..capture import _median_estimate

MAX_SAMPLES = 60_000        # (mass, head norm) pairs kept per layer for the minimal-update correlation


@dataclass
class Layer:
    massive: torch.Tensor            # [B, T] the token passes the massive test at this layer's output
    chan: torch.Tensor               # [B, T, k] |h| of the tracked channels
    thresh: torch.Tensor             # [B] max(massive_abs, massive_rel x median |h|) per window
    absmax: float
    hidden: torch.Tensor | None      # [B, T, C] the layer output (kept for comparisons)
    upd: torch.Tensor | None         # [B, T, 3] ||h_in||, ||attention update||, ||MLP update||
    mass: torch.Tensor | None = None      # [B, H, T] attention mass each query puts on the anchor keys
    head_norm: torch.Tensor | None = None  # [B, T, H] ||W_o[:, head] o_head|| per query


class Trace:
    """Hooks on one model for one pass: `with Trace(...) as tr: logits = run()`; then tr.layers."""

    def __init__(self, model, th, channels: list[int], anchors: torch.Tensor | None = None,
                 hidden: bool = False, attention: bool = True):
        self.ad = get_adapter(model)
        self.th, self.channels, self.anchors = th, list(channels), anchors
        self.keep_hidden, self.attention = hidden, attention
        self.layers: list[Layer | None] = [None] * self.ad.num_layers
        self._cur: dict = {}
        self._handles = []

    def __enter__(self) -> "Trace":
        ad, reg = self.ad, self._handles.append
        for i, layer in enumerate(ad.layers()):
            reg(layer.register_forward_pre_hook(self._layer_in(i), with_kwargs=True))
            reg(ad.mlp_norm(i).register_forward_pre_hook(self._mid))
            reg(layer.register_forward_hook(self._layer_out(i)))
            if self.attention:
                reg(ad.attention(i).register_forward_hook(self._attn))
                reg(ad.linears(i)["o"].register_forward_pre_hook(self._heads(i)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._cur = {}

    # ---- hooks --------------------------------------------------------------------------------
    def _btc(self, t: torch.Tensor) -> torch.Tensor:
        """[B, T, C] float32 (OPT flattens tokens to [B*T, C] inside its layers)."""
        t = t.detach().float()
        return t if t.dim() == 3 else t.view(*self._cur["bt"], -1)

    def _layer_in(self, i: int):
        def hook(mod, args, kwargs):
            h = self.ad.layer_input(args, kwargs).detach().float()
            self._cur = {"h_in": h, "bt": h.shape[:2]}
        return hook

    def _mid(self, mod, args):
        self._cur["h_mid"] = self._btc(args[0])

    def _attn(self, mod, args, out):
        w = self.ad.attention_probs(out)
        if w is None or self.anchors is None:
            return
        w = w.detach().float()
        B, H, Tq, Tk = w.shape
        keys = self.anchors.to(w.device)
        if Tk > Tq:        # a fixed prefix of keys (the anchor bias) comes first: it is the anchor
            keys = torch.cat([torch.ones(B, Tk - Tq, dtype=torch.bool, device=w.device), keys], 1)
        self._cur["mass"] = (w * keys[:, None, None, :]).sum(-1).cpu()     # [B, H, Tq]

    def _heads(self, i: int):
        ad = self.ad

        def hook(mod, args):
            x = self._btc(args[0])
            B, T, _ = x.shape
            w = mod.weight.detach().float().view(-1, ad.num_heads, x.shape[-1] // ad.num_heads)   # [C, H, hd]
            y = torch.einsum("bthd,chd->bthc", x.view(B, T, ad.num_heads, -1), w)
            self._cur["head_norm"] = y.norm(dim=-1).cpu()                                       # [B, T, H]
        return hook

    def _layer_out(self, i: int):
        def hook(mod, args, out):
            cur = self._cur
            h = self._btc(self.ad.hidden_of(out))
            a = h.abs()
            med = _median_estimate(a, self.th.median_samples)
            thresh = torch.clamp(self.th.massive_rel * med, min=self.th.massive_abs)
            upd = None
            if "h_mid" in cur and not self.ad.family.post_ln:   # post-LN: no un-normalised residual to update
                h_in, h_mid = cur["h_in"], cur["h_mid"]
                upd = torch.stack([h_in.norm(dim=-1), (h_mid - h_in).norm(dim=-1), (h - h_mid).norm(dim=-1)], -1).cpu()
            self.layers[i] = Layer(
                massive=(a.amax(-1) > thresh[:, None]).cpu(), chan=a[..., self.channels].cpu(), thresh=thresh.cpu(),
                absmax=float(a.max()), hidden=h.cpu() if self.keep_hidden else None, upd=upd,
                mass=cur.get("mass"), head_norm=cur.get("head_norm"))
            self._cur = {}
        return hook


class RunStats:
    """Running per-layer sums of one intervention over all batches (and, against the baseline, its influence)."""

    def __init__(self, L: int, H: int, k: int, samples: bool = False, causal: bool = True):
        self.L, self.H, self.causal = L, H, causal
        z = lambda *s: torch.zeros(*s, dtype=torch.float64)   # noqa: E731
        self.chan_anchor, self.chan_other = z(L, k), z(L, k)       # max |h| of the dominant channels
        self.massive, self.massive_other, self.tokens = z(L), z(L), 0   # massive tokens (all, not anchors)
        self.thresh, self.windows, self.absmax = z(L), 0, z(L)
        self.mass, self.queries = z(L, H), 0                       # anchor mass per head, non-anchor queries
        self.upd, self.upd_n = z(L, 2, 3), z(2)                    # update norms at anchors (0) / others (1)
        self.rel, self.rel_n = z(L), 0                             # ||h - h_base|| / ||h_base||, non-anchor tokens
        self.kl = self.agree = self.nll = self.nll_base = 0.0
        self.pred = 0
        self.samples = [[] for _ in range(L)] if samples else None   # (mass, head norm) per layer
        self.anchor_write = z(L, H) if samples else None             # head norm at the anchor's own query
        self.anchor_write_n = 0

    def add(self, layers: list[Layer], anchors: torch.Tensor, logits=None, ids=None, base=None, base_logits=None,
            logit_anchors: torch.Tensor | None = None):
        """One batch. anchors [B, T] in this pass's token coordinates; base: the baseline layers of the same batch
        in the same coordinates, for the influence numbers; logits/ids/base_logits in window coordinates, with
        logit_anchors (default anchors) marking the anchors there."""
        other = ~anchors
        self.tokens += anchors.numel()
        self.windows += anchors.shape[0]
        self.queries += int(other.sum())
        for i, lay in enumerate(layers):
            if lay.chan.shape[-1]:
                self.chan_anchor[i] = torch.maximum(self.chan_anchor[i], _masked_max(lay.chan, anchors))
                self.chan_other[i] = torch.maximum(self.chan_other[i], _masked_max(lay.chan, other))
            self.massive[i] += int(lay.massive.sum())
            self.massive_other[i] += int((lay.massive & other).sum())
            self.thresh[i] += float(lay.thresh.sum())
            self.absmax[i] = max(float(self.absmax[i]), lay.absmax)
            if lay.mass is not None:
                self.mass[i] += (lay.mass * other[:, None, :]).sum((0, 2)).double()
            if lay.upd is not None:
                self.upd[i, 0] += lay.upd[anchors].sum(0).double()
                self.upd[i, 1] += lay.upd[other].sum(0).double()
            if base is not None and lay.hidden is not None:
                h, h0 = lay.hidden[other], base[i].hidden[other]
                self.rel[i] += float(((h - h0).norm(dim=-1) / h0.norm(dim=-1).clamp_min(1e-12)).sum())
            if self.samples is not None and lay.mass is not None and lay.head_norm is not None:
                self._sample(i, lay, anchors, other)
        self.upd_n += torch.tensor([int(anchors.sum()), int(other.sum())], dtype=torch.float64)
        if base is not None:
            self.rel_n += int(other.sum())
        if logits is not None and ids is not None:
            self._logits(logits, ids, ~(anchors if logit_anchors is None else logit_anchors), base_logits)

    def _sample(self, i: int, lay: Layer, anchors, other) -> None:
        m = lay.mass.permute(0, 2, 1)[other]               # [n, H]
        n = lay.head_norm[other]                            # [n, H]
        kept = sum(len(s[0]) for s in self.samples[i])
        if kept < MAX_SAMPLES:
            self.samples[i].append((m.flatten()[: MAX_SAMPLES - kept], n.flatten()[: MAX_SAMPLES - kept]))
        if i == 0:
            self.anchor_write_n += int(anchors.sum())
        self.anchor_write[i] += lay.head_norm[anchors].sum(0).double()

    def _logits(self, logits, ids, other, base_logits) -> None:
        """Causal LMs: next-token predictions made at non-anchor positions (NLL and KL); masked LMs on unmasked
        text: the distribution at each non-anchor position (KL and agreement only, no perplexity)."""
        s = 1 if self.causal else 0
        T = logits.shape[1] - s
        logp = F.log_softmax(logits[:, :T].float(), -1)
        keep = other[:, :T]
        labels = ids[:, s:]
        self.pred += int(keep.sum())
        if self.causal:
            self.nll += float((-logp.gather(-1, labels[..., None])[..., 0])[keep].sum())
        if base_logits is not None:
            logq = F.log_softmax(base_logits[:, :T].float(), -1)
            if self.causal:
                self.nll_base += float((-logq.gather(-1, labels[..., None])[..., 0])[keep].sum())
            kl = (logq.exp() * (logq - logp)).sum(-1)
            self.kl += float(kl[keep].sum())
            self.agree += int((logq.argmax(-1) == logp.argmax(-1))[keep].sum())

    # ---- results ------------------------------------------------------------------------------
    def head_mass(self) -> torch.Tensor:
        """[L, H] mean attention mass on the anchors, over non-anchor queries."""
        return self.mass / max(self.queries, 1)

    def ppl(self) -> float | None:
        return float(torch.tensor(self.nll / self.pred).exp()) if self.pred and self.causal else None

    def ppl_base(self) -> float | None:
        return float(torch.tensor(self.nll_base / self.pred).exp()) if self.pred and self.nll_base else None


def _masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """max over the masked tokens of x [B, T, k] -> [k] (0 where nothing is masked)."""
    sel = x[mask]
    return sel.amax(0).double() if sel.numel() else torch.zeros(x.shape[-1], dtype=torch.float64)
