"""Weight -> activation: remove the down_proj weight outliers that build the dominant channel and follow the
channel through every later layer, against the same number of random columns of the same layer (the control).
Removed from every token (the weights), or only at the outlier tokens (the columns' inputs there), which keeps
the columns' ordinary work and so isolates what flows from the outlier tokens to the others.

Modes: "zero" zeroes the columns; "shrink" clips each column to the layer's typical column size (the median over
its columns of max |W[:, k]|), which leaves ordinary entries alone and cuts only the outlier weights."""
from __future__ import annotations

import contextlib

import torch

from ..errors import SysqError

MODES = ("zero", "shrink")


@contextlib.contextmanager
def ablated(ad, layer: int, columns: list[int], mode: str = "zero"):
    """down_proj (or fc2) columns of `layer` ablated inside the block, restored after it."""
    if mode not in MODES:
        raise SysqError(f"unknown ablation mode {mode!r}; use one of {', '.join(MODES)}")
    w = ad.down(layer).weight.data
    old = w[:, columns].clone()
    if mode == "zero":
        w[:, columns] = 0
    else:
        s = w.abs().amax(0).median()
        w[:, columns] = old.clamp(-s, s)
    try:
        yield
    finally:
        w[:, columns] = old


@contextlib.contextmanager
def ablated_at(ad, layer: int, columns: list[int], anchors: torch.Tensor):
    """The columns' inputs zeroed at the anchor tokens [B, T] only: the massive write goes where it is made, every
    other token keeps the columns (so what changes elsewhere arrives through attention to the anchors)."""
    cols = torch.tensor(columns)

    def hook(mod, args):
        x = args[0]
        a = anchors.to(x.device).reshape(x.shape[:-1])          # OPT feeds [B*T, C]
        x = x.clone()
        x[..., cols] = x[..., cols].masked_fill(a[..., None], 0)
        return (x, *args[1:])
    handle = ad.down(layer).register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def ablation_summary(runs: dict, layer: int, columns: list[int], control: list[int], channel_index: int = 0,
                     base: str = "baseline", name: str = "ablate") -> dict:
    """Per layer: the dominant channel's max |h| and the massive-token count, baseline vs ablated vs control;
    `removed`: no massive token in any layer after `layer` once ablated; `control_keeps`: the control still has
    massive tokens in every layer after `layer` where the baseline had them."""
    b, a, c = runs[base], runs[name], runs[f"{name}-control"]
    chan = lambda r: torch.maximum(r.chan_anchor[:, channel_index], r.chan_other[:, channel_index])  # noqa: E731
    rows = [{"layer": i, "channel_base": float(chan(b)[i]), "channel_ablated": float(chan(a)[i]),
             "channel_control": float(chan(c)[i]), "massive_base": int(b.massive[i]),
             "massive_ablated": int(a.massive[i]), "massive_control": int(c.massive[i]),
             "threshold_base": float(b.thresh[i] / max(b.windows, 1))} for i in range(b.L)]
    after = [r for r in rows if r["layer"] > layer]
    had = [r for r in after if r["massive_base"]]
    return {
        "layer": layer, "columns": columns, "control_columns": control,
        "removed": all(r["massive_ablated"] == 0 for r in after),
        "control_keeps": bool(had) and all(r["massive_control"] > 0 for r in had),
        "channel_after_max": {k: max((r[f"channel_{k}"] for r in after), default=0.0)
                              for k in ("base", "ablated", "control")},
        "massive_after": {k: sum(r[f"massive_{k}"] for r in after) for k in ("base", "ablated", "control")},
        "layers": rows,
    }
