"""Plots of an OutlierReport (matplotlib, headless Agg), labelled with token text."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402


def _label(s: str, width: int = 12) -> str:
    s = s.replace("\n", "\\n")
    if s.strip() == "":
        s = s.replace(" ", "␣") or "∅"
    return s if len(s) <= width else s[: width - 1] + "…"


def _save(fig, folder: Path, name: str, names: list[str]) -> None:
    fig.tight_layout()
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    names.append(name)


def make_plots(report, folder) -> list[str]:
    """Write the plots into folder; returns their file names."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arr, names = report.arrays, []
    title = report.model.get("name") or report.model["family"]
    if "resid_absmax" in arr and len(arr["resid_absmax"]):
        _magnitudes(arr, title, folder, names)
        _layer_channel(arr, report, title, folder, names)
    if "snapshot" in arr:
        _snapshot(arr, report, title, folder, names)
    if "down_column" in arr:
        _down_column(arr, title, folder, names)
    if arr.get("attn_maps"):
        _attention(arr, report, title, folder, names)
    if report.lifecycle:
        _lifecycle(report, title, folder, names)
    if report.mitigation:
        _before_after(report.mitigation, title, folder, names)
    return names


def _before_after(mg, title, folder, names):
    layers = [l["layer"] for l in mg["layers"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    ax1.plot(layers, [l["resid_before"] for l in mg["layers"]], "-o", ms=3, label="residual, before")
    ax1.plot(layers, [l["resid_after"] for l in mg["layers"]], "-o", ms=3, label="residual, after")
    ax1.plot(layers, [l["down_in_before"] for l in mg["layers"]], "--s", ms=3, label="down_proj input, before")
    ax1.plot(layers, [l["down_in_after"] for l in mg["layers"]], "--s", ms=3, label="down_proj input, after")
    ax1.set_yscale("log")
    ax1.set_xlabel("layer")
    ax1.set_ylabel("max |activation|")
    ax1.set_title("largest magnitudes per layer")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    sc = list(mg["scales"].values())
    ax2.plot([s["before"] for s in sc], ".", ms=4, label="before")
    ax2.plot([s["after"] for s in sc], ".", ms=4, label="after (preserved tokens left out)")
    ax2.set_yscale("log")
    ax2.set_xlabel("decoder linear (in model order)")
    ax2.set_ylabel(f"static INT{mg['bits']} per-tensor scale")
    ax2.set_title("static activation scales")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.suptitle(f"{title}: before / after plan {mg['plan']['method']} ({mg['recipe']})")
    _save(fig, folder, "before_after.png", names)


def _magnitudes(arr, title, folder, names):
    top3, med = arr["resid_top3"].numpy(), arr["resid_median"].numpy()
    layers = np.arange(len(med))
    fig, ax = plt.subplots(figsize=(8, 4))
    for j, style in enumerate(("-o", "-s", "-^")):
        ax.plot(layers, top3[:, j], style, ms=3, label=f"top-{j + 1} |h|")
    ax.plot(layers, med, "k--", label="median |h|")
    ax.set_yscale("log")
    ax.set_xlabel("layer (decoder layer output)")
    ax.set_ylabel("|activation| (mean over windows)")
    ax.set_title(f"{title}: residual-stream magnitudes per layer")
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, folder, "layer_magnitudes.png", names)


def _layer_channel(arr, report, title, folder, names):
    m = arr["resid_absmax"].numpy()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    im = ax.imshow(np.maximum(m, 1e-3), aspect="auto", norm=LogNorm(), cmap="magma", interpolation="nearest")
    ax.set_xlabel("residual channel")
    ax.set_ylabel("layer")
    top = [c["channel"] for c in report.activation["residual_channels"][:3]]
    if top:   # the outlier channels, plus regular ticks that do not collide with them
        regular = [t for t in range(0, m.shape[1], 128) if all(abs(t - c) > m.shape[1] // 25 for c in top)]
        ax.set_xticks(sorted(set(top) | set(regular)))
    ax.set_title(f"{title}: max |h| per layer x channel (outlier channels {top})")
    fig.colorbar(im, ax=ax, label="max |h| over windows")
    _save(fig, folder, "layer_channel.png", names)


def _snapshot(arr, report, title, folder, names):
    layer, h = arr["snapshot"]
    h = h.numpy()
    toks = [_label(t) for t in arr["map_tokens"][: h.shape[0]]]
    fig, ax = plt.subplots(figsize=(10, 6))
    im = ax.imshow(h, aspect="auto", cmap="viridis", interpolation="nearest")   # linear: the spike stands alone
    ax.set_yticks(range(len(toks)))
    ax.set_yticklabels(toks, fontsize=7)
    ax.set_xlabel("channel")
    ax.set_ylabel("token (window 0)")
    r, c = np.unravel_index(h.argmax(), h.shape)
    ax.set_title(f"{title}: |h| after layer {layer} (first massive layer), tokens x channels; "
                 f"max {h.max():.4g} at {toks[r]!r}, channel {c}", fontsize=9)
    fig.colorbar(im, ax=ax, label="|h|")
    _save(fig, folder, "emergence_heatmap.png", names)


def _down_column(arr, title, folder, names):
    layer, row, col, block, rlo, lo = arr["down_column"]      # |W| around (row, col); block[0, 0] is W[rlo, lo]
    rhi, hi = rlo + block.shape[0], lo + block.shape[1]
    block = block.abs().numpy()
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(block, aspect="auto", cmap="Reds", interpolation="nearest", extent=(lo - .5, hi - .5, rhi - .5, rlo - .5))
    ax.axvline(col, color="b", lw=0.5, ls=":")
    ax.axhline(row, color="b", lw=0.5, ls=":")
    ax.set_xlabel("down_proj input column (intermediate channel)")
    ax.set_ylabel("down_proj output row (residual channel)")
    ax.set_title(f"{title}: |W_down| of layer {layer} around column {col}, row {row}")
    fig.colorbar(im, ax=ax, label="|W|")
    _save(fig, folder, "down_proj_column.png", names)


def _attention(arr, report, title, folder, names):
    layers = report.attention["layers"]
    best = max(layers, key=lambda a: max(a["sink_share"]) if a["sink_share"] else 0)
    head, amap = arr["attn_maps"][best["layer"]]
    amap = amap.numpy()
    toks = [_label(t, 10) for t in arr["map_tokens"][: amap.shape[0]]]
    fig, ax = plt.subplots(figsize=(8, 7))
    im = ax.imshow(amap, cmap="Blues", interpolation="nearest", vmin=0, vmax=1)
    ax.set_xticks(range(len(toks)))
    ax.set_xticklabels(toks, rotation=90, fontsize=6)
    ax.set_yticks(range(len(toks)))
    ax.set_yticklabels(toks, fontsize=6)
    ax.set_xlabel("key token")
    ax.set_ylabel("query token")
    ax.set_title(f"{title}: attention of layer {best['layer']} head {head} "
                 f"(sink share {best['sink_share'][head]:.2f}), window 0")
    fig.colorbar(im, ax=ax, label="attention probability")
    _save(fig, folder, "attention_sink.png", names)


def _lifecycle(report, title, folder, names):
    fig, ax = plt.subplots(figsize=(9, 4.5))
    seen = set()
    for life in report.lifecycle:                         # max |h| per layer, once per channel
        if life["channel"] in seen:
            continue
        seen.add(life["channel"])
        ax.plot([r["layer"] for r in life["layers"]], [r["resid_absmax"] for r in life["layers"]], "-o", ms=3,
                label=f"ch {life['channel']}: max |h| after layer (all tokens)")
    dom = report.lifecycle[0]["channel"]
    for life in [x for x in report.lifecycle if x["channel"] == dom]:   # signed writes at the tracked positions
        rows = [r for r in life["layers"] if "mlp" in r]
        who = f"ch {dom}, {life['tokens']} tokens"
        ax.plot([r["layer"] for r in rows], [r["h_out"] for r in rows], "s-", ms=3, alpha=0.7, label=f"{who}: h after layer")
        ax.plot([r["layer"] for r in rows], [r["mlp"] for r in rows], "x:", label=f"{who}: MLP write")
        ax.plot([r["layer"] for r in rows], [r["attn"] for r in rows], "+:", label=f"{who}: attention write")
    life = report.lifecycle[0]
    for e in [life["emergence"]] + life["amplifications"]:
        if e:
            ax.axvline(e["layer"], color="g", alpha=0.3)
    for v in life["vanishing"]:
        ax.axvline(v["layer"], color="r", alpha=0.3)
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xlabel(f"layer (lines: green = birth/amplification, red = vanishing, {life['tokens']} token)")
    ax.set_ylabel("value (signed, symlog)")
    ax.set_title(f"{title}: lifecycle of the dominant channels")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    _save(fig, folder, "lifecycle.png", names)
