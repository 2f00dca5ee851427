"""The family matrix: every supported family x (detect, each mitigation method, auto per recipe, save/reload,
compressed-tensors export), each cell run on a tiny random model with a planted BOS / [CLS] outlier (the cells
tests/test_families.py asserts), printed as Markdown with the reason for every cell that is not supported.

    python scripts/family_matrix.py [--out docs/family_matrix.md]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from family_cells import (FAMILIES, FUNCTION_PRESERVING, METHOD_RECIPE, METHODS, RECIPES, auto_cell,  # noqa: E402
                          detect_cell, export_cell, method_cell)


def _short(plan: str) -> str:
    return (plan.replace("preserve-tokens", "pt").replace("preserve-channels", "pc").replace("smooth", "sm")
            .replace("rotate", "rot").replace("clip", "cl"))


def _reason(text: str) -> str:
    """The first reason, without the linear it was found on."""
    first = text.split("\n")[0]
    head, sep, rest = first.partition(": ")
    return rest if sep and " " not in head else first


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="also write the Markdown here")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="sysq-matrix-"))
    lines = [f"Tiny random models (2 layers, hidden 64, vocabulary 300) with a planted BOS / [CLS] outlier; calibration "
             f"6 x 24 random tokens; torch {torch.__version__}, CPU. `python scripts/family_matrix.py`.", "",
             "### Detect and each mitigation method (recipe " + METHOD_RECIPE + ")", "",
             "| family | detect: top outlier token | " + " | ".join(METHODS) + " |",
             "|---|---|" + "---|" * len(METHODS)]
    for fam in FAMILIES:
        d = detect_cell(fam)
        row = [fam, "BOS / [CLS]" if d["top_token_id"] == 1 else f"id {d['top_token_id']}"]
        for m in METHODS:
            try:
                c = method_cell(fam, m)
                ok = c["finite"] and (m not in FUNCTION_PRESERVING or c["float_err"] < 1e-3)
                txt = ("ok" if ok else "FAIL") + (f" ({'+'.join(c['rotated'])})" if m == "rotate" else "")
                if c["smoothed"] == 0:
                    txt = "no-op: no norm -> linear fold is exact here (post-LN)" if m == "smoothquant" else \
                        txt + " (no mapping helped)"
                elif m in FUNCTION_PRESERVING:
                    txt += f", float {c['float_err']:.0e}"
            except Exception as e:   # a cell that raises is a cell, not the end of the matrix
                txt = f"error: {type(e).__name__}: {e}"
            row.append(txt)
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "### auto (measured) per recipe: the plan chosen, float function kept, save/reload, export", "",
              "Each cell: chosen plan (sm smooth, rot rotate, pt preserve-tokens, pc preserve-channels, cl clip); "
              "sysq save -> load identical logits; compressed-tensors export of the engine-target auto plan reloaded by "
              "plain transformers: max logit difference relative to sysq's (dynamic scales, w8a8 and the "
              "token-scales of w8a8-static's engine plan: compressed-tensors divides amax by 127.5, sysq by 127), "
              "or the reason it is refused.", "",
              "| family | " + " | ".join(RECIPES) + " |", "|---|" + "---|" * len(RECIPES)]
    for fam in FAMILIES:
        row = [fam]
        for r in RECIPES:
            try:
                c = auto_cell(fam, r, tmp / f"{fam}-{r}")
                e = export_cell(fam, r, tmp / f"{fam}-{r}-ct")
                exp = f"export {e['err']:.0e}" if "err" in e else f"export refused: {_reason(e['refused'])}"
                txt = (f"{_short(c['chosen'])}; float {c['float_err']:.0e}; reload "
                       f"{'identical' if c['identical'] else 'DIFFERS'}; {exp}")
            except Exception as ex:
                txt = f"error: {type(ex).__name__}: {ex}"
            row.append(txt)
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"({time.perf_counter() - start:.0f} s)"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
