"""Attention outliers: key positions that receive >= 0.1 x T attention mass (summed over queries,
averaged over heads; An et al.), the sink share per head (mean attention to position 0), Gu et al.'s
Sink_eps, and Q/K/V norms at the activation-outlier tokens against the other tokens.

The attention pass runs sysq.attention_mass where it can (sdpa's output; the mass per key from Q and K by a Triton
kernel, no [B, H, T, T] tensor), else eager attention, switched on only for the detection pass; the hook in
capture.py reduces either to received mass per key at once."""
from __future__ import annotations

import contextlib

import torch

from .. import attention_mass
from ..arch import get_adapter
from ..capture import Recorder
from .thresholds import Thresholds
from .tokens import Namer

@contextlib.contextmanager
def attention_probes(model, device=None):
    """Run the block so attention modules return what the attention statistics read: sysq.attention_mass
    (sdpa's output, the mass from Q and K by Triton) where it runs, on `device` (default: the model's), for a
    plain causal decoder; else eager attention's probabilities."""
    device = device if device is not None else next(model.parameters()).device
    before = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if before not in (None, "eager") and attention_mass.available(device) and get_adapter(model).plain_attention:
        with attention_mass.enabled(model):
            yield
    else:
        with eager_attention(model):
            yield


@contextlib.contextmanager
def eager_attention(model):
    """Run the block with eager attention (so attention modules return probabilities), then restore."""
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    if before in (None, "eager"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def attention_summary(rec: Recorder, namer: Namer, th: Thresholds) -> dict:
    layers = []
    sink_heads = total_heads = 0
    for i, st in enumerate(rec.attn):
        if st.windows == 0:
            continue
        share = (st.sink_sum / st.windows).tolist()
        heads = [h for h, s in enumerate(share) if s > th.sink_eps]
        sink_heads += len(heads)
        total_heads += len(share)
        qo, no, qr, nr = rec.qkv[i]
        norms = {}
        if no and nr:
            at, rest = (qo / no).tolist(), (qr / nr).tolist()
            norms = {"outlier_tokens": dict(zip("qkv", at)), "other_tokens": dict(zip("qkv", rest)),
                     "ratio": {r: a / b if b else None for r, a, b in zip("qkv", at, rest)},
                     "outlier_token_slots": no}
        hits = st.outliers
        layers.append({
            "layer": i,
            "outlier_keys": hits.count,
            "outlier_positions": [{"pos": p, "count": n} for p, n in hits.positions.most_common(8)],
            "outlier_tokens": [{"token": namer.text(t), "token_id": t, "count": n, "type": "initial"}
                               for t, n in hits.initial_ids.most_common(2)]
                              + [{"token": namer.text(t), "token_id": t, "count": n, "type": namer.type(t, 1)}
                                 for t, n in hits.ids.most_common(8)],
            "sink_share": share,
            "sink_heads": heads,
            "mass_to_first": st.recv0_sum / st.windows,
            "qkv_norms": norms,
            "map_head": st.attn_map_head,
        })
    return {"layers": layers, "sink_eps": (sink_heads / total_heads) if total_heads else None,
            "sink_heads": sink_heads, "heads": total_heads,
            "unit": "outlier keys counted per (window, position); sink share = mean attention to position 0"}


def attention_maps(rec: Recorder) -> dict[int, tuple[int, torch.Tensor]]:
    return {i: (st.attn_map_head, st.attn_map) for i, st in enumerate(rec.attn) if st.attn_map is not None}
