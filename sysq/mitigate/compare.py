"""Outliers before and after mitigation: what the transforms did to the magnitudes the quantizers see.

Per layer, on the same windows: the largest |h| of the residual stream (the decoder layer's output) with its
channel and token position, and the largest |x| at down_proj's input (where the systematic outliers are
born). A function-preserving transform leaves the logits alone but moves these numbers; the per-tensor
scales follow them. Statistics stream through hooks (one max per layer and window), nothing is kept.
"""
from __future__ import annotations

import torch

from ..arch import get_adapter


@torch.no_grad()
def magnitudes(model, ids: torch.Tensor) -> list[dict]:
    """Per layer: resid max |h| (channel, position) and down_proj input max |x| over the windows `ids`."""
    ad = get_adapter(model)
    out = [{"layer": i, "resid": 0.0, "resid_channel": None, "resid_pos": None, "down_in": 0.0}
           for i in range(ad.num_layers)]

    def on_layer(i):
        def fn(_m, _a, o):
            h = (o[0] if isinstance(o, tuple) else o).detach().abs()
            v, flat = h.reshape(-1).max(0)
            if v.item() > out[i]["resid"]:
                rem = int(flat) % (h.shape[-2] * h.shape[-1])
                out[i].update(resid=v.item(), resid_pos=rem // h.shape[-1], resid_channel=rem % h.shape[-1])
        return fn

    def on_down(i):
        def fn(_m, args):
            out[i]["down_in"] = max(out[i]["down_in"], args[0].detach().abs().max().item())
        return fn

    hs = [ad.layers()[i].register_forward_hook(on_layer(i)) for i in range(ad.num_layers)]
    hs += [ad.down(i).register_forward_pre_hook(on_down(i)) for i in range(ad.num_layers)]
    try:
        device = next(model.parameters()).device
        for row in ids:
            model(input_ids=row[None].to(device), use_cache=False)
    finally:
        for h in hs:
            h.remove()
    return out


def panel(before: list[dict], after: list[dict], title: str = "after") -> str:
    """A Markdown before/after table of `magnitudes` results."""
    lines = [f"| layer | resid max |h| before (ch, pos) | {title} (ch, pos) | down_proj in max |x| before | {title} |",
             "|---:|---|---|---:|---:|"]
    for b, a in zip(before, after):
        lines.append(f"| {b['layer']} | {b['resid']:.1f} ({b['resid_channel']}, {b['resid_pos']}) | "
                     f"{a['resid']:.1f} ({a['resid_channel']}, {a['resid_pos']}) | {b['down_in']:.1f} | {a['down_in']:.1f} |")
    return "\n".join(lines)
