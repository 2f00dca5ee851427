"""Activation -> attention: with the outlier removed (its down_proj columns ablated, or its channel clamped at
the outlier tokens in the residual stream), how much attention still goes to the outlier tokens.

Per layer: the mean attention mass on the anchor keys over every other query, averaged over heads, and the
share of heads that sink (mean mass > sink_eps, after Gu et al.'s Sink_eps with the anchors for token 0)."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def clamped(ad, channels: list[int], anchors: torch.Tensor):
    """At every layer output, clamp `channels` at the anchor tokens to the largest |h| that channel has at the
    window's other tokens: the massive value goes, the token and the other channels stay."""
    def hook(mod, args, out):
        h = ad.hidden_of(out)
        a = anchors.to(h.device)
        if h.dim() != 3 or not a.any():
            return None
        for c in channels:
            tau = h[..., c].abs().masked_fill(a, 0).amax(-1, keepdim=True)       # [B, 1]
            h[..., c] = torch.where(a, torch.maximum(torch.minimum(h[..., c], tau), -tau), h[..., c])
        return out
    handles = [layer.register_forward_hook(hook) for layer in ad.layers()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def sink_summary(runs: dict, sink_eps: float, names: list[str], after: int = -1) -> dict:
    """Per layer and run: mean anchor mass and sink-head share; their means over the layers after `after` (the
    layers whose input carries the massive activation)."""
    out = {"sink_eps": sink_eps, "after_layer": after, "runs": {}}
    for name in names:
        m = runs[name].head_mass()                                   # [L, H]
        sink = (m > sink_eps).double()
        out["runs"][name] = {"mass": m.mean(1).tolist(), "sink_share": sink.mean(1).tolist(),
                             "mean_mass": float(m[after + 1:].mean()), "mean_sink_share": float(sink[after + 1:].mean())}
    return out
