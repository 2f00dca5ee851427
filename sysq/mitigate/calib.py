"""Calibration statistics the mitigation searches need, streamed through forward pre-hooks.

For each watched module input: the per-channel |x| max over every calibration token, the same max over
the tokens that the preserve-tokens rule would leave in float ("kept" tokens), the median token max, and
a small sample of input rows (the first `sample_windows` windows, BOS included) on which the searches
measure output error. Memory is bounded by the sample, never by the number of windows.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


@dataclass
class TokenRule:
    """Which tokens stay in float: fixed positions, and tokens whose |x| max exceeds `threshold` x the
    calibration median token max of that input (PrefixQuant's rule). threshold None: positions only."""

    positions: tuple[int, ...] = (0,)
    threshold: float | None = 64.0

    def mask(self, x: torch.Tensor, median_token_max: float | None) -> torch.Tensor:
        """x [batch, seq, ch] -> bool [batch, seq] of preserved tokens."""
        b, t, _ = x.shape
        m = torch.zeros(b, t, dtype=torch.bool, device=x.device)
        for p in self.positions:
            if -t <= p < t:
                m[:, p] = True
        if self.threshold is not None and median_token_max is not None:
            m |= x.abs().amax(-1) > self.threshold * median_token_max
        return m


@dataclass
class InputStats:
    absmax: torch.Tensor                       # [ch] over all tokens
    absmax_kept: torch.Tensor                  # [ch] over tokens the rule does not preserve
    median_token_max: float                    # median over calibration tokens of max_c |x|
    sample: torch.Tensor                       # [n, ch] rows of the first windows
    sample_preserved: torch.Tensor             # [n] bool: rows the rule preserves
    token_max: list = field(default_factory=list, repr=False)


@torch.no_grad()
def input_stats(model: nn.Module, calib, modules: dict[str, nn.Module], rule: TokenRule | None = None,
                sample_windows: int = 2, batch_size: int = 4, quiet: bool = False) -> dict[str, InputStats]:
    """Statistics of the inputs of `modules` (name -> module) over the calibration windows.

    Two passes: the first finds each input's median token max (the rule's reference), the second the
    per-channel maxima split into all / kept tokens. With rule=None the second pass is skipped.
    """
    ids = calib.ids if hasattr(calib, "ids") else calib
    acc: dict[str, dict] = {n: {"absmax": None, "kept": None, "tmax": [], "sample": [], "pres": []} for n in modules}
    state = {"pass": 0, "seen": 0}

    def hook(name):
        def fn(_mod, args):
            x = args[0].detach().float()
            if x.dim() == 2:
                x = x.unsqueeze(0)
            a = acc[name]
            if state["pass"] == 0:
                a["tmax"].append(x.abs().amax(-1).flatten())
                am = x.abs().amax((0, 1))
                a["absmax"] = am if a["absmax"] is None else torch.maximum(a["absmax"], am)
                if state["seen"] < sample_windows:
                    take = min(x.shape[0], sample_windows - state["seen"])
                    a["sample"].append(x[:take].reshape(-1, x.shape[-1]).clone())
            else:
                mask = rule.mask(x, a["median"])
                kept = x.abs().masked_fill(mask.unsqueeze(-1), 0).amax((0, 1))
                a["kept"] = kept if a["kept"] is None else torch.maximum(a["kept"], kept)
                if state["seen"] < sample_windows:
                    take = min(x.shape[0], sample_windows - state["seen"])
                    a["pres"].append(mask[:take].flatten())
        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in modules.items()]
    try:
        for p in range(1 if rule is None else 2):
            state["pass"], state["seen"] = p, 0
            for batch in tqdm(list(_batches(ids, batch_size)), desc=f"mitigate calib pass {p + 1}", disable=quiet):
                model(input_ids=batch, use_cache=False)
                state["seen"] += batch.shape[0]
            if p == 0:
                for a in acc.values():
                    a["median"] = torch.cat(a["tmax"]).median().item()
    finally:
        for h in handles:
            h.remove()
    out = {}
    for n, a in acc.items():
        sample = torch.cat(a["sample"])
        pres = torch.cat(a["pres"]) if a["pres"] else torch.zeros(sample.shape[0], dtype=torch.bool)
        out[n] = InputStats(a["absmax"], a["kept"] if a["kept"] is not None else a["absmax"], a["median"],
                            sample, pres)
    return out


def _batches(ids: torch.Tensor, batch_size: int):
    for i in range(0, ids.shape[0], batch_size):
        yield ids[i:i + batch_size]
