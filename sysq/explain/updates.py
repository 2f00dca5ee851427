"""Minimal updates: a head that puts its attention on the anchor (the outlier token, whose value vector is
small) should write almost nothing into the residual stream. For every layer, head and (non-outlier) query:
the attention mass on the anchors against the norm of that head's write (its slice of o_proj applied to its
output); the Spearman and Pearson correlations per layer, the mean write per mass bin, the write of each head
at the anchor's own query (there it attends to the anchor alone, so it is W_o v_anchor), and the norms of the
attention and MLP updates per token relative to the residual they update."""
from __future__ import annotations

import torch

BINS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0 + 1e-9)


def _ranks(x: torch.Tensor) -> torch.Tensor:
    r = torch.empty_like(x)
    r[x.argsort()] = torch.arange(len(x), dtype=x.dtype)
    return r


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float | None:
    a, b = a - a.mean(), b - b.mean()
    d = a.norm() * b.norm()
    return float((a @ b) / d) if d > 0 else None


def update_summary(stats) -> dict:
    """From the baseline RunStats (kept with samples=True)."""
    layers = []
    for i in range(stats.L):
        if not stats.samples[i]:
            continue
        m = torch.cat([s[0] for s in stats.samples[i]]).double()
        n = torch.cat([s[1] for s in stats.samples[i]]).double()
        bins = []
        for lo, hi in zip(BINS[:-1], BINS[1:]):
            sel = (m >= lo) & (m < hi)
            bins.append({"lo": lo, "hi": min(hi, 1.0), "pairs": int(sel.sum()),
                         "mean_norm": float(n[sel].mean()) if sel.any() else None})
        low, high = n[m < 0.1], n[m >= 0.9]
        anchor = (stats.anchor_write[i] / stats.anchor_write_n).tolist() if stats.anchor_write_n else None
        upd = stats.upd[i] / stats.upd_n.clamp_min(1)[:, None]      # [anchor/other, (in, attn, mlp)]
        layers.append({
            "layer": i, "pairs": len(m), "spearman": _pearson(_ranks(m), _ranks(n)), "pearson": _pearson(m, n),
            "mean_norm_mass_lt_0.1": float(low.mean()) if len(low) else None,
            "mean_norm_mass_ge_0.9": float(high.mean()) if len(high) else None,
            "share_mass_ge_0.9": float((m >= 0.9).double().mean()),
            "median_norm": float(n.median()), "bins": bins,
            "anchor_write": anchor,
            "update_anchor": {"h": float(upd[0, 0]), "attn": float(upd[0, 1]), "mlp": float(upd[0, 2])},
            "update_other": {"h": float(upd[1, 0]), "attn": float(upd[1, 1]), "mlp": float(upd[1, 2])},
        })
    sp = [l["spearman"] for l in layers if l["spearman"] is not None]
    ratios = [l["mean_norm_mass_ge_0.9"] / l["mean_norm_mass_lt_0.1"] for l in layers
              if l["mean_norm_mass_ge_0.9"] and l["mean_norm_mass_lt_0.1"]]
    return {"unit": "(window, non-outlier query, head) pairs; mass = attention on the anchor keys; norm = "
                    "||W_o[:, head] o_head||",
            "layers": layers,
            "median_spearman": float(torch.tensor(sp).median()) if sp else None,
            "layers_negative": sum(s < 0 for s in sp), "layers_measured": len(sp),
            "median_high_low_ratio": float(torch.tensor(ratios).median()) if ratios else None,
            "layers_with_high_mass": len(ratios)}
