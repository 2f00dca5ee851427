"""Calibration statistics the mitigation searches need, streamed through forward pre-hooks.

For each watched module input: the per-channel |x| max over every calibration token, the same max over
the tokens that the preserve-tokens rule leaves quantized ("kept" in the scale: not preserved), and a
small sample of input rows (the first `sample_windows` windows, BOS included) on which the searches
measure output error. Memory is bounded by the sample, never by the number of windows.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


@dataclass
class TokenRule:
    """Which tokens stay in float: fixed positions, and tokens whose |x| max over channels exceeds the
    absolute `threshold` (the quant engine's QuantSpec.preserve_threshold / preserve_positions)."""

    positions: tuple[int, ...] = (0,)
    threshold: float | None = None

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """x [batch, seq, ch] -> bool [batch, seq] of preserved tokens."""
        from ..quant.observers import token_keep_mask
        m = token_keep_mask(x, self.threshold, tuple(self.positions))
        return torch.zeros(x.shape[:-1], dtype=torch.bool, device=x.device) if m is None else m


@dataclass
class InputStats:
    absmax: torch.Tensor                       # [ch] over all tokens
    absmax_kept: torch.Tensor                  # [ch] over tokens the rule does not preserve
    sqmean: torch.Tensor                       # [ch] mean x^2 over all tokens (diagonal input covariance)
    sample: torch.Tensor                       # [n, ch] rows of the first windows
    sample_preserved: torch.Tensor             # [n] bool: rows the rule preserves
    absmean_kept: torch.Tensor | None = None   # [ch] mean |x| over tokens the rule does not preserve (AWQ)


class InputStatsCollector:
    """Forward pre-hooks that accumulate InputStats for the inputs of `modules` (name -> module) over whatever
    forward passes run while attached (`with collector:`): the whole model (input_stats) or one decoder layer
    at a time (sysq.sequential). Each module counts the windows it has seen for its sample."""

    def __init__(self, modules: dict[str, nn.Module], rule: TokenRule | None = None, sample_windows: int = 2,
                 max_rows: int = 1024):
        self.modules, self.rule, self.sample_windows, self.max_rows = modules, rule, sample_windows, max_rows
        self.acc = {n: {"absmax": None, "kept": None, "sq": 0.0, "n": 0, "abs_kept": 0.0, "n_kept": 0, "seen": 0,
                        "sample": [], "pres": []} for n in modules}
        self._handles = []

    def _hook(self, name):
        def fn(_mod, args):
            x = args[0].detach().float()
            if x.dim() == 2:
                x = x.unsqueeze(0)
            a = self.acc[name]
            ax = x.abs()
            rule = self.rule
            mask = rule.mask(x) if rule is not None else torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
            am, kept = ax.amax((0, 1)), ax.masked_fill(mask.unsqueeze(-1), 0).amax((0, 1))
            a["absmax"] = am if a["absmax"] is None else torch.maximum(a["absmax"], am)
            a["kept"] = kept if a["kept"] is None else torch.maximum(a["kept"], kept)
            a["sq"] = a["sq"] + x.pow(2).sum((0, 1))
            a["n"] += x.shape[0] * x.shape[1]
            a["abs_kept"] = a["abs_kept"] + ax.masked_fill(mask.unsqueeze(-1), 0).sum((0, 1))
            a["n_kept"] += int((~mask).sum())
            if a["seen"] < self.sample_windows:
                take = min(x.shape[0], self.sample_windows - a["seen"])
                a["sample"].append(x[:take].reshape(-1, x.shape[-1]).clone())
                a["pres"].append(mask[:take].flatten())
            a["seen"] += x.shape[0]
        return fn

    def __enter__(self) -> "InputStatsCollector":
        self._handles = [m.register_forward_pre_hook(self._hook(n)) for n, m in self.modules.items()]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def result(self, seqlen: int) -> dict[str, InputStats]:
        out = {}
        for n, a in self.acc.items():
            if a["sample"]:
                sample, pres = _thin(torch.cat(a["sample"]), torch.cat(a["pres"]), self.max_rows, seqlen=seqlen)
            else:                                   # sample_windows=0: ranges only
                sample, pres = a["absmax"].new_zeros(0, a["absmax"].numel()), torch.zeros(0, dtype=torch.bool)
            out[n] = InputStats(a["absmax"], a["kept"], a["sq"] / max(a["n"], 1), sample, pres,
                                a["abs_kept"] / max(a["n_kept"], 1))
        return out


@torch.no_grad()
def input_stats(model: nn.Module, calib, modules: dict[str, nn.Module], rule: TokenRule | None = None,
                sample_windows: int = 2, batch_size: int = 4, quiet: bool = False,
                max_rows: int = 1024) -> dict[str, InputStats]:
    """Statistics of the inputs of `modules` (name -> module) over the calibration windows, in one pass."""
    ids = calib.ids if hasattr(calib, "ids") else calib
    device = next(model.parameters()).device
    with InputStatsCollector(modules, rule, sample_windows, max_rows) as col:
        for batch in tqdm(list(_batches(ids, batch_size)), desc="mitigate: input stats", disable=quiet):
            model(input_ids=batch.to(device), use_cache=False)
    return col.result(ids.shape[1])


def _thin(sample: torch.Tensor, pres: torch.Tensor, max_rows: int, seqlen: int):
    """At most `max_rows` evenly spaced rows, always keeping each window's first token and every preserved
    row (the outlier tokens decide static scales and errors, so the search must see them)."""
    n = sample.shape[0]
    if n <= max_rows:
        return sample, pres
    keep = torch.zeros(n, dtype=torch.bool, device=sample.device)
    keep[torch.linspace(0, n - 1, max_rows, device=sample.device).long()] = True
    keep[::seqlen] = True
    keep |= pres
    return sample[keep], pres[keep]


def _batches(ids: torch.Tensor, batch_size: int):
    for i in range(0, ids.shape[0], batch_size):
        yield ids[i:i + batch_size]
