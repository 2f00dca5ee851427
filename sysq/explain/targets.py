"""What to intervene on, read from the detect report: the dominant residual channel, the layer where it first
becomes massive (Sun et al.'s test) and the down_proj columns that build it there, the layer where it is born
(first |h| > massive_abs) and its columns, and a seeded random control of the same size for each."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

NO_OUTLIER = ("no dominant outlier: the report has no residual channel that passes the massive test "
              "(|x| > massive_abs and >= massive_rel x median |h|) in any layer")


@dataclass
class Targets:
    channel: int | None = None                  # the dominant residual channel
    channels: list = field(default_factory=list)    # every dominant channel (clamped together)
    massive_layer: int | None = None            # first layer where the dominant channel is massive
    massive_columns: list = field(default_factory=list)   # down_proj columns that build it there
    born_layer: int | None = None               # first layer where it passes massive_abs (report's emergence)
    born_columns: list = field(default_factory=list)
    initial: bool = False                       # the report's outlier tokens sit at position 0
    controls: dict = field(default_factory=dict)  # intervention -> the random columns / channels of its control
    seed: int = 0
    reason: str | None = None                   # why there is nothing to ablate or clamp

    def to_dict(self) -> dict:
        return asdict(self)


def choose_targets(report, ad, seed: int = 0) -> Targets:
    s = report.summary
    pos = report.tokens.get("positions") or []
    t = Targets(seed=seed, initial=bool(pos) and pos[0]["pos"] == 0)
    if not s.get("dominant_channels") or not s.get("massive_layers"):
        t.reason = NO_OUTLIER
        return t
    t.channel = s["dominant_channel"]
    t.channels = [d["channel"] for d in s["dominant_channels"]]
    t.massive_layer = s["massive_layers"][0]
    t.born_layer = s["emergence_layer"]
    t.born_columns = list(s["emergence_columns"])
    # the builders of the massive value: the last birth or amplification at or before the first massive layer
    built = [(t.born_layer, t.born_columns)] + [(a["layer"], a["columns"]) for a in s["amplification_columns"]]
    built = [(layer, cols) for layer, cols in built if layer is not None and layer <= t.massive_layer and cols]
    if built:
        t.massive_columns = list(max(built)[1])
    g = torch.Generator().manual_seed(seed)
    inter = ad.down(0).in_features
    if t.massive_columns:
        t.controls["ablate"] = _random(inter, len(t.massive_columns), _avoid(report, t.massive_layer, t), g)
    if t.born_columns and t.born_layer != t.massive_layer:
        t.controls["ablate-born"] = _random(inter, len(t.born_columns), _avoid(report, t.born_layer, t), g)
    large = {c for site in report.sites("resid") for c in site.get("large_channels", [])}
    t.controls["clamp"] = _random(ad.hidden_size, len(t.channels), large | set(t.channels), g)
    return t


def _avoid(report, layer: int, t: Targets) -> set:
    """Columns a control must not touch: the layer's weight-outlier columns and every targeted column."""
    return set(report.down_outlier_columns(layer)) | set(t.massive_columns) | set(t.born_columns)


def _random(n: int, k: int, avoid: set, g: torch.Generator) -> list[int]:
    pool = torch.tensor([j for j in range(n) if j not in avoid])
    return sorted(pool[torch.randperm(len(pool), generator=g)[:k]].tolist())
