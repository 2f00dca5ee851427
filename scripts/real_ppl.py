"""Every real kernel's perplexity against its simulated recipe's, same model, same windows, one run.

    flock /tmp/sysq-cpu.lock python scripts/real_ppl.py --out results/kernels/ppl-cpu
    flock /tmp/sysq-cpu.lock python scripts/real_ppl.py --method auto --recipes w8a8-static,w8a8-fp8-static ...
    python scripts/real_ppl.py --device cuda --out $OUT/ppl      # the GPU kernels

For each recipe: the simulated model (backend fake) and RECIPE+real (sysq/quant/kernels.py), both quantized
from the same float model with the same calibration windows (so the same codes and scales), perplexity on
WikiText-2 raw test (first --windows windows of --seqlen tokens, BOS prepended); the goal is
|real / simulated - 1| <= 0.5%. --method PLAN first mitigates the float model for each recipe (sysq.plan from
a detect report on the calibration windows, sysq.mitigate), as a deployment would. Writes OUT/real_ppl.json
and OUT/real_ppl.md.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sysq  # noqa: E402
from evaluation.perplexity import perplexity  # noqa: E402
from sysq.io import atomic_write_text  # noqa: E402
from sysq.quant import quantize  # noqa: E402
from sysq.quant.recipes import real_backend  # noqa: E402

RECIPES = ["w8a16", "w4a16", "w8a8", "w8a8-static", "w8a8-fp8", "w8a8-fp8-static"]
GOAL = 0.005


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--windows", type=int, default=40)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--calib-n", type=int, default=16)
    p.add_argument("--method", default="none", help="mitigation plan applied before quantizing (auto, ...)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="out/real-ppl")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base, tok = sysq.load(args.model, dtype=args.dtype, device=args.device)
    evalw = sysq.windows("wikitext2", tok, n=args.windows, seqlen=args.seqlen)
    calib = sysq.calibration(tok, n=args.calib_n, seqlen=args.seqlen, seed=0)
    settings = dict(model=args.model, device=args.device, dtype=args.dtype, dataset="wikitext2", seqlen=args.seqlen,
                    windows=args.windows, calib="wikitext2-valid", calib_n=args.calib_n, calib_seed=0, method=args.method,
                    threads=torch.get_num_threads(), torch=torch.__version__)
    print("settings:", json.dumps(settings), flush=True)
    rows, report = [], None

    def ppl(model, label):
        t = time.perf_counter()
        r = perplexity(model, evalw, quiet=args.quiet, model_name=args.model, recipe=label)
        return r.ppl, time.perf_counter() - t

    fp, fp_s = ppl(base, "fp")
    rows.append(dict(recipe="fp", sim=fp, sim_s=fp_s))
    print(f"fp {fp:.4f} ({fp_s:.0f}s)", flush=True)
    for name in [r for r in args.recipes.split(",") if r]:
        row = dict(recipe=name)
        try:
            model, recipe = base, name
            if args.method != "none":
                if report is None:
                    report = sysq.detect(base, calib, tokenizer=tok, attention=False, quiet=True)
                model = copy.deepcopy(base)
                plan = sysq.plan(report, name, args.method)
                recipe = sysq.mitigate(model, plan, calib, quiet=True, report=report)
                row["plan"] = str(plan)        # what auto chose, as applied
            sim, real = copy.deepcopy(model), copy.deepcopy(model)
            quantize(sim, recipe, calib, quiet=True)
            s = quantize(real, dataclasses.replace(recipe, backend=real_backend(recipe.weight, recipe.act))
                         if args.method != "none" else name + "+real", calib, quiet=True)
            row["kernels"] = sorted(s.schemes)
            row["sim"], row["sim_s"] = ppl(sim, name)
            del sim
            row["real"], row["real_s"] = ppl(real, name + "+real")
            del real
            row["ratio"] = row["real"] / row["sim"]
            row["ok"] = abs(row["ratio"] - 1) <= GOAL
        except Exception as e:   # one failing kernel must not lose the others
            row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        rows.append(row)
        print(json.dumps(row), flush=True)
        atomic_write_text(out / "real_ppl.json", json.dumps(dict(settings=settings, rows=rows), indent=1) + "\n")
    lines = ["# Real kernels vs their simulated recipes (perplexity)", "", "Settings: " + json.dumps(settings), "",
             "| recipe | simulated ppl | real ppl | real / simulated | within 0.5% | kernel | s (sim, real) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["recipe"] == "fp":
            lines.append(f"| fp | {r['sim']:.4f} | | | | float | {r['sim_s']:.0f} |")
        elif "error" in r:
            lines.append(f"| {r['recipe']} | error: {r['error']} | | | | | |")
        else:
            lines.append(f"| {r['recipe']} | {r['sim']:.4f} | {r['real']:.4f} | {r['ratio']:.5f} | "
                         f"{'yes' if r['ok'] else 'NO'} | {'; '.join(r['kernels'])} | {r['sim_s']:.0f}, {r['real_s']:.0f} |")
    md = "\n".join(lines) + "\n"
    atomic_write_text(out / "real_ppl.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
