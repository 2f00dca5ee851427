"""The sequential pipeline against the in-memory one on a real model: same detect report, same perplexity?

    flock /tmp/sysq-cpu.lock python scripts/compare_pipelines.py                 # SmolLM2, CPU
    python scripts/compare_pipelines.py --device cuda --configs w8a8-static@auto,w4a16+gptq

Per configuration (RECIPE or RECIPE@METHOD: the method's plan from the detect report on the calibration
windows) the model is loaded fresh, mitigated and quantized through each pipeline (memory, then sequential
on --device), and its perplexity measured (WikiText-2 raw test, --seqlen x --windows, BOS). The detect reports
of the two pipelines are compared without their cost section. Prints a table; writes it as JSON under $OUT.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sysq  # noqa: E402
from evaluation.perplexity import perplexity  # noqa: E402


def run(args, config: str, pipeline: str, calib, test, report) -> dict:
    recipe, _, method = config.partition("@")
    model, _ = sysq.load(args.model, device=args.device if pipeline == "memory" else None)
    kw = dict(quiet=True, pipeline=pipeline, device=args.device)
    t = time.perf_counter()
    if method:
        r = sysq.mitigate(model, sysq.plan(report, recipe, method), calib, report=report, **kw)
    else:
        r = recipe
    sysq.quantize(model, r, calib, **kw)
    secs = time.perf_counter() - t
    if args.device != "cpu":
        model.to(args.device)
    res = perplexity(model, test, quiet=True)
    return {"config": config, "pipeline": pipeline, "ppl": res.ppl, "seconds": secs}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--configs", default="w8a8-static@auto,w4a16+gptq")
    p.add_argument("--calib-n", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--windows", type=int, default=40)
    p.add_argument("--device", default="cpu", help="where the sequential pipeline computes (default: %(default)s)")
    p.add_argument("--out", default=os.environ.get("OUT", "out"))
    args = p.parse_args()

    model, tok = sysq.load(args.model)
    calib = sysq.calibration(tok, n=args.calib_n, seqlen=args.seqlen, seed=0)
    test = sysq.windows("wikitext2", tok, n=args.windows, seqlen=args.seqlen)
    reports = {"sequential": sysq.detect(model, calib, tok, quiet=True, pipeline="sequential", device=args.device)}
    reports["memory"] = sysq.detect(model.to(args.device), calib, tok, quiet=True, pipeline="memory")
    del model
    dicts = [json.dumps({k: v for k, v in reports[pl].to_dict().items() if k != "cost"}) for pl in reports]
    same = dicts[0] == dicts[1]
    print(f"model={args.model} calibration=wikitext2-valid {args.calib_n}x{args.seqlen} seed 0; perplexity "
          f"wikitext2 test {args.seqlen}x{args.windows} BOS; sequential on {args.device}")
    print(f"detect report, memory vs sequential: {'identical' if same else 'DIFFERENT'}")
    rows = []
    print("| configuration | memory ppl | sequential ppl | relative difference | memory s | sequential s |")
    print("|---|---|---|---|---|---|")
    for config in args.configs.split(","):
        a, b = (run(args, config, pl, calib, test, reports["memory"]) for pl in ("memory", "sequential"))
        diff = b["ppl"] / a["ppl"] - 1
        rows.append({"config": config, "memory": a, "sequential": b, "relative_difference": diff})
        print(f"| {config} | {a['ppl']:.4f} | {b['ppl']:.4f} | {diff:+.4%} | {a['seconds']:.0f} | "
              f"{b['seconds']:.0f} |", flush=True)
    from sysq.io import atomic_write_text
    atomic_write_text(Path(args.out) / "compare-pipelines.json", json.dumps(
        {"model": args.model, "device": args.device, "detect_identical": same, "rows": rows}, indent=2) + "\n")
    return 0 if same and all(abs(r["relative_difference"]) <= 0.002 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
