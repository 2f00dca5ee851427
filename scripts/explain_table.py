"""Static INT8 on top of the anchor-bias model, beside the existing auto plan, in one perplexity table.

    flock /tmp/sysq-cpu.lock .venv/bin/python scripts/explain_table.py --out results/explain/table
    python scripts/explain_table.py --device cuda --out $OUT/explain-table          # one GPU: a few minutes

Rows (w8a8-static: INT8 weights per channel, INT8 activations per tensor with static scales):
  fp                    the float model
  fp+bias               the float model with the anchor (BOS) as an explicit bias: its float keys/values at every
                        layer, computed once, the token itself removed from the sequence (sysq.explain.AnchorBias)
  none                  sysq.quantize, no mitigation
  preserve-tokens       the run-time token rule (BOS and any token over the report's massive threshold stay float
                        at every linear)
  bias                  static INT8 on the anchor-bias model: calibration and evaluation run through the bias, so the
                        quantized model never sees BOS; nothing else changes
  auto                  sysq.plan(report, 'w8a8-static') -> sysq.mitigate -> sysq.quantize (rotate + smooth +
                        preserve-tokens)
  auto-bias             the same rotate + smooth, with the run-time token rule replaced by the anchor bias

Fair comparison: every row is evaluated on the same windows (WikiText-2 raw test, first N x seqlen, BOS prepended)
by evaluation/perplexity.py, over the same predicted tokens. The bias rows take the full windows too: the wrapper
checks and strips BOS, runs the model on the text with the fixed prefix keys/values, and returns BOS's stored float
logits for the first prediction. That one prediction per window is thus float in the bias rows, so the table also
gives the perplexity of the other seqlen-1 predictions per window (the logits at BOS depend on BOS alone, so they
come from a two-token pass).
Calibration: seeded windows of WikiText-2 valid (never the eval text); the detect report behind the plans is made on
them. Resumable: rows already in OUT/table.json with the same settings are skipped.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sysq  # noqa: E402
from evaluation.perplexity import perplexity  # noqa: E402
from sysq.detect import OutlierReport, detect  # noqa: E402
from sysq.explain import AnchorBias  # noqa: E402
from sysq.explain.bias import quantize_under_bias  # noqa: E402
from sysq.io import atomic_write_text  # noqa: E402
from sysq.quant.api import quant_linears  # noqa: E402

RECIPE = "w8a8-static"
ROWS = ["fp", "fp+bias", "none", "preserve-tokens", "bias", "auto", "auto-bias"]
log = logging.getLogger("explain_table")


@torch.no_grad()
def first_nll(model, ids, device) -> float:
    """Summed NLL of the first text token given BOS alone (the first prediction of each window)."""
    logits = model(input_ids=ids[:, :2].to(device)).logits[:, 0].float()
    return float(F.cross_entropy(logits, ids[:, 1].to(device), reduction="sum"))


def static_ranges(m) -> dict:
    obs = sorted((q.observer.absmax, q.name) for q in quant_linears(m) if q.observer is not None and q.observer.tokens)
    if not obs:
        return {}
    return {"static_absmax_max": obs[-1][0], "static_absmax_linear": obs[-1][1],
            "static_absmax_median": obs[len(obs) // 2][0]}


def markdown(res: dict) -> str:
    s, cells = res["settings"], res["cells"]
    fp = cells.get("fp", {})
    lines = [f"# Static INT8 ({RECIPE}) on the anchor-bias model vs the auto plan: {s['model']}", "",
             f"Perplexity on {s['dataset']} test, {s['windows']} windows x {s['seqlen']} tokens, BOS prepended "
             f"(all rows the same predicted tokens). Calibration {s['calib_n']} x {s['seqlen']} of {s['calib']} seed "
             f"{s['calib_seed']}; device {s['device']}; commit {s.get('commit')}.", "",
             "| row | ppl | x FP | ppl without the first prediction | x FP | largest static range (linear) | "
             "median static range | seconds |", "|---|---|---|---|---|---|---|---|"]
    for row in ROWS:
        c = cells.get(row)
        if c is None:
            continue
        if "error" in c:
            lines.append(f"| {row} | error: {c['error']} | | | | | | |")
            continue
        r1 = c["ppl"] / fp["ppl"] if fp.get("ppl") else float("nan")
        r2 = c["ppl_rest"] / fp["ppl_rest"] if fp.get("ppl_rest") else float("nan")
        rng = (f"{c['static_absmax_max']:.4g} ({c['static_absmax_linear']})" if "static_absmax_max" in c else "-")
        med = f"{c['static_absmax_median']:.4g}" if "static_absmax_median" in c else "-"
        lines.append(f"| {row} | {c['ppl']:.3f} | {r1:.4f} | {c['ppl_rest']:.3f} | {r2:.4f} | {rng} | {med} | "
                     f"{c['seconds']:.0f} |")
    lines += ["", "Rows: " + "; ".join(f"{k}: {v}" for k, v in res.get("rows", {}).items())]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", default="results/explain/table")
    ap.add_argument("--windows", type=int, default=40)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--calib-n", type=int, default=16)
    ap.add_argument("--calib-seed", type=int, default=0)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--report", default=None, help="a detect report of this model (default: detect on the calibration)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (default: %(default)s)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import subprocess
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip() or None
    settings = {"model": args.model, "recipe": RECIPE, "dataset": "wikitext2", "seqlen": args.seqlen,
                "windows": args.windows, "calib": "wikitext2-valid", "calib_n": args.calib_n,
                "calib_seed": args.calib_seed, "device": args.device}
    jpath = out / "table.json"
    res = json.loads(jpath.read_text()) if jpath.exists() else {}
    if res.get("settings", {}) | {"commit": None} != settings | {"commit": None}:
        res = {"cells": {}}
    res["settings"] = settings | {"commit": commit}
    res["rows"] = {"fp+bias": "BOS as fixed float prefix keys/values", "bias": "static INT8 calibrated and run "
                   "through the anchor bias", "auto-bias": "auto's rotate + smooth, BOS by the anchor "
                   "bias instead of the run-time token rule"}

    base, tok = sysq.load(args.model, device=args.device)
    device = next(base.parameters()).device
    evalw = sysq.windows("wikitext2", tok, n=args.windows, seqlen=args.seqlen)
    calib = sysq.calibration(tok, n=args.calib_n, seqlen=args.seqlen, seed=args.calib_seed)
    bos = [tok.bos_token_id]
    if args.report:
        report = OutlierReport.load(args.report)
    else:
        report = detect(base, calib, tokenizer=tok, attention=False, quiet=args.quiet)
    mitigated = {}

    def auto_float():
        """The auto plan's float transforms, applied once (rows auto and auto-bias share them)."""
        if not mitigated:
            m = copy.deepcopy(base)
            p = sysq.plan(report, RECIPE)
            recipe = sysq.mitigate(m, p, calib, quiet=args.quiet, report=report)
            mitigated.update(model=m, recipe=recipe, plan=str(p))
        return mitigated

    def build(row: str):
        if row == "fp":
            return base, {}
        if row == "fp+bias":
            return AnchorBias(base, bos), {}
        if row in ("none", "preserve-tokens"):
            m = copy.deepcopy(base)
            recipe = sysq.mitigate(m, sysq.plan(report, RECIPE, row), calib, quiet=args.quiet, report=report)
            sysq.quantize(m, recipe, calib, quiet=args.quiet)
            return m, static_ranges(m)
        if row == "bias":
            m = copy.deepcopy(base)
            return quantize_under_bias(m, RECIPE, calib, bos, base, quiet=args.quiet), static_ranges(m)
        a = auto_float()
        m = copy.deepcopy(a["model"])
        if row == "auto":
            sysq.quantize(m, a["recipe"], calib, quiet=args.quiet)
            return m, static_ranges(m) | {"plan": a["plan"]}
        wrapped = quantize_under_bias(m, RECIPE, calib, bos, a["model"], quiet=args.quiet)
        return wrapped, static_ranges(m) | {"plan": a["plan"] + " (preserve-tokens replaced by the anchor bias)"}

    for row in [r for r in args.rows.split(",") if r]:
        if row not in ROWS:
            raise SystemExit(f"unknown row {row!r}; rows: {', '.join(ROWS)}")
        if row in res["cells"] and "error" not in res["cells"][row]:
            log.info("skip %s (done)", row)
            continue
        t = time.perf_counter()
        model, info = build(row)
        r = perplexity(model, evalw, quiet=args.quiet, model_name=args.model, recipe=row)
        f = first_nll(model, evalw.ids, device)
        rest = (r.nll * r.tokens - f) / (r.tokens - len(evalw))
        res["cells"][row] = {"ppl": r.ppl, "nll": r.nll, "tokens": r.tokens, "ppl_rest": math.exp(rest),
                             "first_nll_mean": f / len(evalw), "seconds": time.perf_counter() - t, **info}
        log.info("%s: ppl %.4f (without the first prediction %.4f)", row, r.ppl, math.exp(rest))
        atomic_write_text(jpath, json.dumps(res, indent=1))
        atomic_write_text(out / "table.md", markdown(res))
        del model
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
