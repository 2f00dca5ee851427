"""Outliers before/after the auto plan's float transforms (no quantization): per-layer residual and
down_proj-input maxima on calibration windows, written as Markdown.

    .venv/bin/python scripts/mitigation_panel.py --recipe w8a8-static --n 1 --out results/mitigation/before_after.md
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sysq  # noqa: E402
from sysq.mitigate.api import mitigate, plan  # noqa: E402
from sysq.mitigate.compare import magnitudes, panel  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--recipe", default="w8a8-static")
    ap.add_argument("--method", default="auto")
    ap.add_argument("--n", type=int, default=1)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--out", default="results/mitigation/before_after.md")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    model, tok = sysq.load(args.model, device=args.device)
    calib = sysq.calibration(tok, n=args.n, seqlen=args.seqlen, seed=0)
    before = magnitudes(model, calib.ids)
    mitigated = copy.deepcopy(model)
    p = plan(None, args.recipe, args.method)
    mitigate(mitigated, p, calib, quiet=True)
    after = magnitudes(mitigated, calib.ids)
    text = (f"# Outliers before / after the {args.method} plan's transforms ({args.recipe})\n\n"
            f"{args.model}, {args.n} calibration window(s) x {args.seqlen} of WikiText-2 valid (seed 0), float32, "
            f"no quantization.\n\n{p}\n\n{panel(before, after)}\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
