"""Plots of an ExplainReport (matplotlib, headless Agg)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..plots import _save, plt

NAN = float("nan")


def _axes(ax, ylabel: str, log: bool = False, xlabel: str = "layer", legend: int = 8, title: str | None = None):
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=legend)
    if title:
        ax.set_title(title)


def _style(name: str) -> str:
    return "--" if name.endswith("control") else "-"


def make_plots(ex, folder) -> list[str]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    title = ex.model.get("name") or ex.model["family"]
    if ex.ablation:
        _ablation(ex, title, folder, names)
    _sinks(ex, title, folder, names)
    if ex.influence:
        _influence(ex, title, folder, names)
    if ex.updates["layers"]:
        _updates(ex, title, folder, names)
    if ex.bias:
        _bias(ex, title, folder, names)
    return names


def _ablation(ex, title, folder, names):
    fig, axes = plt.subplots(1, len(ex.ablation), figsize=(6.5 * len(ex.ablation), 4), squeeze=False)
    for ax, (name, a) in zip(axes[0], ex.ablation.items()):
        rows = a["layers"]
        x = [r["layer"] for r in rows]
        for key, style, label in (("base", "-o", "unmodified"), ("ablated", "-s", f"ablated {a['columns']}"),
                                  ("control", "--^", f"control {a['control_columns']}")):
            ax.plot(x, [max(r[f"channel_{key}"], 1e-3) for r in rows], style, ms=3, label=label)
        ax.plot(x, [r["threshold_base"] for r in rows], ":", color="k", label="massive threshold (mean)")
        ax.axvline(a["layer"], color="grey", lw=0.8)
        _axes(ax, f"max |h[{ex.targets['channel']}]|", log=True, title=f"{name}: layer {a['layer']}")
    fig.suptitle(f"{title}: weight -> activation")
    _save(fig, folder, "ablation.png", names)


def _sinks(ex, title, folder, names):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    for name, r in ex.sinks["runs"].items():
        ax1.plot(r["mass"], _style(name), marker="o", ms=3, label=name)
        ax2.plot(r["sink_share"], _style(name), marker="o", ms=3, label=name)
    for ax in (ax1, ax2):
        ax.set_ylim(-0.02, 1.02)
    _axes(ax1, "attention mass on the outlier tokens")
    _axes(ax2, f"share of heads with mass > {ex.sinks['sink_eps']}")
    fig.suptitle(f"{title}: activation -> attention (non-outlier queries, mean over heads)")
    _save(fig, folder, "sinks.png", names)


def _influence(ex, title, folder, names):
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, v in ex.influence.items():
        ax.plot([max(x, 1e-9) for x in v["hidden_rel_change"]], _style(name), marker="o", ms=3,
                label=f"{name} (KL {v['kl']:.3g})" if v["kl"] is not None else name)
    _axes(ax, "||h - h_base|| / ||h_base|| (non-outlier tokens)", log=True, legend=7,
          title=f"{title}: influence on the non-outlier tokens")
    _save(fig, folder, "influence.png", names)


def _updates(ex, title, folder, names):
    u = ex.updates["layers"]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4))
    x = [r["layer"] for r in u]
    for key, style in (("spearman", "-o"), ("pearson", "-s")):
        ax1.plot(x, [NAN if r[key] is None else r[key] for r in u], style, ms=3, label=key.capitalize())
    ax1.axhline(0, color="k", lw=0.8)
    _axes(ax1, "corr(mass on anchors, head write norm)")
    samples = ex.arrays.get("samples")
    layer = max(u, key=lambda r: r["share_mass_ge_0.9"])["layer"]
    if samples and samples[layer]:
        m = torch.cat([s[0] for s in samples[layer]])[:20000]
        n = torch.cat([s[1] for s in samples[layer]])[:20000]
        ax2.scatter(m.numpy(), n.clamp_min(1e-4).numpy(), s=2, alpha=0.3)
        _axes(ax2, "head write norm", log=True, xlabel="attention mass on the anchors", legend=0,
              title=f"layer {layer} (every head, non-outlier query)")
    for key, marker in (("attn", "o"), ("mlp", "s")):
        for who, ls in (("update_anchor", ":"), ("update_other", "-")):
            ax3.plot(x, [r[who][key] / r[who]["h"] if r[who]["h"] else NAN for r in u], ls=ls, marker=marker,
                     ms=3, label=f"{key}, {'anchor' if who == 'update_anchor' else 'other'} tokens")
    _axes(ax3, "||update|| / ||h_in||", log=True)
    fig.suptitle(f"{title}: minimal updates")
    _save(fig, folder, "updates.png", names)


def _bias(ex, title, folder, names):
    b = ex.bias["layers"]
    x = [r["layer"] for r in b]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(x, [r["absmax_base"] for r in b], "-o", ms=3, label="unmodified: max |h|")
    ax.plot(x, [r["absmax_bias"] for r in b], "-s", ms=3, label="anchor as explicit bias: max |h|")
    ax.plot(x, [r["threshold_base"] for r in b], ":", color="k", label="massive threshold (mean, unmodified)")
    _axes(ax, "max |h| in the residual stream", log=True,
          title=f"{title}: anchor bias, max |logit diff| {ex.bias['max_logit_diff']:.2g}")
    _save(fig, folder, "bias.png", names)
