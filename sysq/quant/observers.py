"""Calibration observers: running statistics of each linear's input over calibration windows.

- RangeObserver: the static range of one activation quantizer (min, max over the tokens that are not
  preserved), and *where* the absolute maximum came from (window, position, channel): the diagnostic of
  which token sets a per-tensor scale.
- InputStats / collect_input_stats: per-linear input abs-max per channel and per-token maxima, reusable by
  smoothing and token/channel preservation (mitigation). Running reductions only: never [tokens x channels]
  tensors across windows.

Inputs arrive as [batch, seq, channels]; windows are counted by rows seen, so `window` is the row index
of the calibration set in the order it was fed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import SysqError

log = logging.getLogger(__name__)


def as_batches(calib, batch_size: int = 1):
    """Yield LongTensor [b, T] batches from a sysq Windows, a LongTensor [n, T] or a list of rows."""
    ids = getattr(calib, "ids", calib)
    if isinstance(ids, (list, tuple)):
        ids = torch.stack([torch.as_tensor(r) for r in ids])
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[0] == 0:
        raise SysqError("calibration data must be a non-empty sysq Windows or a LongTensor [n, seqlen]; "
                        "get one with sysq.calibration(tokenizer, n=32)")
    for i in range(0, ids.shape[0], batch_size):
        yield ids[i:i + batch_size]


def num_rows(calib) -> int:
    return getattr(calib, "ids", calib).shape[0]


@torch.no_grad()
def run_model(model: nn.Module, calib, quiet: bool = False, desc: str = "calibrating", batch_size: int = 1) -> None:
    """Forward every calibration window once (observers hooked on the model do the work)."""
    device = next(model.parameters()).device
    n = num_rows(calib)
    for ids in tqdm(as_batches(calib, batch_size), total=(n + batch_size - 1) // batch_size, desc=desc,
                    disable=quiet, leave=False):
        model(input_ids=ids.to(device), use_cache=False)


def token_keep_mask(x: torch.Tensor, threshold: float | None, positions) -> torch.Tensor | None:
    """Bool [..., seq] of tokens preserved in float: max |x| over channels above threshold, or position in
    `positions` (indices along the sequence dim; negative ones count from the end). None when no rule."""
    if threshold is None and not positions:
        return None
    keep = torch.zeros(x.shape[:-1], dtype=torch.bool, device=x.device)
    if threshold is not None:
        keep |= x.detach().abs().amax(dim=-1) > threshold
    if positions and x.dim() >= 2:
        seq = x.shape[-2]
        idx = [p % seq for p in positions if -seq <= p < seq]
        if idx:
            keep[..., idx] = True
    return keep


def absmax_where(x3: torch.Tensor, first_window: int) -> tuple[float, dict]:
    """max |x| of x3 [windows, seq, channels] and where it sits (window index counted from first_window)."""
    flat = int(x3.abs().argmax())
    b, rem = divmod(flat, x3.shape[1] * x3.shape[2])
    pos, ch = divmod(rem, x3.shape[2])
    v = float(x3[b, pos, ch])
    return abs(v), dict(window=first_window + b, position=pos, channel=ch, value=v)


@dataclass
class RangeObserver:
    """Running min/max of the entries a static quantizer must cover, with the location of |max|."""

    min: float = float("inf")
    max: float = float("-inf")
    absmax: float = 0.0
    where: dict = field(default_factory=dict)   # window, position, channel, value of the largest |x|
    rows_seen: int = 0
    tokens: int = 0
    preserved_tokens: int = 0

    def update(self, x: torch.Tensor, keep: torch.Tensor | None = None, channels: torch.Tensor | None = None):
        x = x.detach().float()
        x3 = x.reshape(-1, x.shape[-2], x.shape[-1]) if x.dim() >= 2 else x.reshape(1, 1, -1)
        if channels is not None and channels.numel():
            x3 = x3.clone()
            x3[..., channels] = 0
        if keep is not None:
            keep3 = keep.reshape(x3.shape[:2])
            self.preserved_tokens += int(keep3.sum())
            x3 = x3.masked_fill(keep3.unsqueeze(-1), 0)
        self.tokens += x3.shape[0] * x3.shape[1]
        lo, hi = (float(v) for v in torch.aminmax(x3))
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        if max(-lo, hi) > self.absmax:     # locate the new maximum only when there is one
            self.absmax, self.where = absmax_where(x3, self.rows_seen)
        self.rows_seen += x3.shape[0]


@dataclass
class InputStats:
    """One linear's input over the calibration set."""

    name: str
    channel_absmax: torch.Tensor            # [in_features]
    token_absmax: list = field(default_factory=list)   # one [seq] tensor per window (max |x| over channels)
    absmax: float = 0.0
    where: dict = field(default_factory=dict)

    def token_maxima(self) -> torch.Tensor:
        """[windows, seq] max |x| per token (windows of equal length)."""
        return torch.stack(self.token_absmax)


@torch.no_grad()
def collect_input_stats(model: nn.Module, calib, quiet: bool = False, names=None) -> dict[str, InputStats]:
    """Per decoder linear (through the architecture adapter): input abs-max per channel, per-token maxima and
    the location of the largest |x|. `names` limits it to some linears (dotted names)."""
    from ..arch import get_adapter

    stats: dict[str, InputStats] = {}
    rows: dict[str, int] = {}
    handles = []

    def hook(name):
        def fn(mod, args):
            x = args[0].detach().float()
            x3 = x.reshape(-1, x.shape[-2], x.shape[-1])
            a = x3.abs()
            ch = a.amax(dim=(0, 1))
            s = stats.get(name)
            if s is None:
                s = stats[name] = InputStats(name, ch.clone())
                rows[name] = 0
            else:
                torch.maximum(s.channel_absmax, ch, out=s.channel_absmax)
            s.token_absmax.extend(a.amax(dim=-1).unbind(0))
            val, where = absmax_where(x3, rows[name])
            if val > s.absmax:
                s.absmax, s.where = val, where
            rows[name] += x3.shape[0]
        return fn

    for ref in get_adapter(model).linear_refs():
        if names is None or ref.name in names:
            handles.append(ref.module.register_forward_pre_hook(hook(ref.name)))
    try:
        run_model(model, calib, quiet=quiet, desc="input stats")
    finally:
        for h in handles:
            h.remove()
    return stats
