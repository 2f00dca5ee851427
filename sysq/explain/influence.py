"""Influence on the non-outlier tokens: how much their hidden states, their next-token distributions (KL from
the unmodified model) and the perplexity of their predictions change under each intervention. And the reverse
path: keep the outlier activation but remove its attention role by masking the outlier tokens as keys (every
query after them), against masking as many random ordinary tokens."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def masked_keys(ad, keys: torch.Tensor):
    """Every layer's attention ignores the key positions in `keys` [B, T] (each still attends to itself)."""
    def edit(mask):
        B, _, Tq, Tk = mask.shape
        k = keys.to(mask.device)
        if Tk > k.shape[1]:        # a fixed prefix of keys stays visible
            k = torch.cat([torch.zeros(B, Tk - k.shape[1], dtype=torch.bool, device=k.device), k], 1)
        q_pos = torch.arange(Tq, device=mask.device)[:, None] + (Tk - Tq)
        hide = k[:, None, :] & (q_pos != torch.arange(Tk, device=mask.device)[None, :])[None]   # [B, Tq, Tk]
        return mask.masked_fill(hide[:, None], torch.finfo(mask.dtype).min)
    handles = [ad.edit_attention_mask(i, edit) for i in range(ad.num_layers)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def random_keys(anchors: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """As many random ordinary positions per window as it has anchors (never position 0, never an anchor)."""
    out = torch.zeros_like(anchors)
    for b in range(anchors.shape[0]):
        pool = (~anchors[b]).nonzero().flatten()
        pool = pool[pool > 0]
        k = min(int(anchors[b].sum()), len(pool))
        out[b, pool[torch.randperm(len(pool), generator=g)[:k]]] = True
    return out


def influence_summary(runs: dict, names: list[str], base: str = "baseline") -> dict:
    """Per intervention: relative hidden-state change per layer at the non-outlier tokens, mean KL (nats) of their
    next-token distributions from the baseline, top-1 agreement, and perplexity of their predictions."""
    out = {}
    b = runs[base]
    for name in names:
        r = runs[name]
        out[name] = {"hidden_rel_change": (r.rel / max(r.rel_n, 1)).tolist(),
                     "kl": r.kl / r.pred if r.pred else None, "top1_agreement": r.agree / r.pred if r.pred else None,
                     "ppl": r.ppl(), "ppl_base": b.ppl(), "predictions": r.pred}
    return out
