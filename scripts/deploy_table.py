"""The deployment table: each recipe quantized around the outliers by `sysq quantize`, saved, reloaded, exported,
and measured where it runs (sysq's simulation, sysq.load, plain transformers, vLLM), with its size on disk.

    python scripts/deploy_table.py --out out/deploy                      # WikiText-2 test 512 x 40, SmolLM2
    python scripts/deploy_table.py --rows w8a8-static,w4a16 --no-vllm --ppl-windows 8

Each row runs the same command a user runs (`sysq quantize ... --out DIR`, in process), then reads the
quantize.json the command wrote (the sysq perplexity, the reload check, the full plan beside an engine plan);
compressed-tensors folders are also served by vLLM's CPU build when `.venvs/vllm` exists
(`bash scripts/peers/make_venv.sh vllm`). Writes OUT/table.md and OUT/table.json.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sysq.cli import main as sysq_main  # noqa: E402
from sysq.io import atomic_write_text  # noqa: E402

# (recipe, --mitigate, --format): sysq folders with the full plan and without mitigation, then the exports
ROWS = {
    "w8a8-static": [("auto", "sysq"), ("none", "sysq"), ("auto", "compressed-tensors"), ("none", "compressed-tensors")],
    "w8a8": [("auto", "sysq"), ("auto", "compressed-tensors")],
    "w4a16": [("auto", "sysq"), ("auto", "compressed-tensors"), ("none", "compressed-tensors")],
    "w8a16": [("auto", "sysq"), ("auto", "compressed-tensors")],
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--rows", default=",".join(ROWS), help="recipes (default: %(default)s)")
    p.add_argument("--ppl-windows", type=int, default=40)
    p.add_argument("--ppl-seqlen", type=int, default=512)
    p.add_argument("--n", type=int, default=16, help="calibration windows (default: %(default)s)")
    p.add_argument("--seqlen", type=int, default=512, help="calibration window length (default: %(default)s)")
    p.add_argument("--no-vllm", action="store_true", help="skip vLLM even when .venvs/vllm exists")
    p.add_argument("--vllm-dtype", default="float32",
                   help="vLLM's dtype (its CPU int4 kernel needs bfloat16; default: %(default)s)")
    p.add_argument("--plans", default="auto,none", help="which --mitigate rows to run (default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="read the quantize.json of rows already saved under OUT instead of quantizing them again")
    p.add_argument("--out", default="out/deploy")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    results = []
    for recipe in args.rows.split(","):
        if recipe not in ROWS:
            raise SystemExit(f"unknown row {recipe!r}; known: {', '.join(ROWS)}")
        for mitigate, fmt in ROWS[recipe]:
            if mitigate not in args.plans.split(","):
                continue
            name = f"{recipe}-{mitigate}-{'ct' if fmt == 'compressed-tensors' else 'sysq'}"
            folder = out / name
            cmd = ["quantize", "--model", args.model, "--recipe", recipe, "--mitigate", mitigate, "--format", fmt,
                   "--n", str(args.n), "--seqlen", str(args.seqlen), "--ppl-windows", str(args.ppl_windows), "--ppl-seqlen", str(args.ppl_seqlen),
                   "--out", str(folder)]
            print(f"\n##### sysq {' '.join(cmd)}", flush=True)
            t0 = time.perf_counter()
            done = args.resume and (folder / "quantize.json").is_file()
            rc = 0 if done else sysq_main((["--quiet"] if args.quiet else []) + cmd)
            row = {"name": name, "recipe": recipe, "mitigate": mitigate, "format": fmt, "rc": rc,
                   "command": "sysq " + " ".join(cmd), "resumed": done,
                   "seconds": None if done else round(time.perf_counter() - t0, 1)}
            if rc == 0:
                q = json.loads((folder / "quantize.json").read_text())
                fp = q["ppl_before"]["ppl"]
                row.update(fp=fp, sysq=q["ppl_after"]["ppl"], reloaded=q["verify"].get("ppl"),
                           loader=q["verify"]["loader"], mib=q["bytes_on_disk"] / 2**20,
                           full_plan=(q.get("full_plan") or {}).get("ppl"))
                if fmt == "compressed-tensors" and not args.no_vllm:
                    row["vllm"] = _vllm(folder, args)
            results.append(row)
            atomic_write_text(out / "table.json", json.dumps(results, indent=1) + "\n")
    table = _markdown(results, args)
    atomic_write_text(out / "table.md", table)
    print("\n" + table)
    return 0 if all(r["rc"] == 0 for r in results) else 1


def _vllm(folder: Path, args):
    from evaluation.peers import venv_python, vllm_perplexity
    from sysq.data import windows
    from sysq.errors import SysqError
    from transformers import AutoTokenizer

    try:
        venv_python("vllm")
        tok = AutoTokenizer.from_pretrained(folder)
        ev = windows("wikitext2", tok, n=args.ppl_windows, seqlen=args.ppl_seqlen)
        info = vllm_perplexity(folder, ev, folder.parent / f"{folder.name}.vllm", quiet=args.quiet,
                               dtype=args.vllm_dtype)
        print(f"vLLM {info['version']} on the CPU ({args.vllm_dtype}): perplexity {info['ppl']:.3f}", flush=True)
        return info["ppl"]
    except SysqError as e:
        print(f"vLLM: {e}", flush=True)
        return f"failed: {str(e)[:200]}"


def _markdown(rows, args) -> str:
    def f(v):
        return f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))

    head = ["recipe", "plan", "format", "sysq simulated", "x FP", "reloaded", "reloaded by", "vLLM (CPU)",
            "full plan (sysq)", "MiB on disk"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["rc"] != 0:
            lines.append(f"| {r['recipe']} | {r['mitigate']} | {r['format']} | failed (exit {r['rc']}) |" + " |" * 6)
            continue
        plan = r["mitigate"] + (" (engine)" if r["format"] == "compressed-tensors" and r["mitigate"] != "none" else "")
        lines.append("| " + " | ".join([r["recipe"], plan, r["format"], f(r["sysq"]), f(r["sysq"] / r["fp"]),
                                        f(r["reloaded"]), r["loader"], f(r.get("vllm")), f(r.get("full_plan")),
                                        f"{r['mib']:.1f}"]) + " |")
    fp = next((r["fp"] for r in rows if r["rc"] == 0), None)
    return (f"Model {args.model} (float32), WikiText-2 raw test, seqlen {args.ppl_seqlen}, first {args.ppl_windows} "
            f"windows, BOS; calibration {args.n} x {args.seqlen} of WikiText-2 valid, seed 0; FP perplexity {f(fp)}. "
            "`plan` auto (engine) is the auto plan restricted to what compressed-tensors carries; `full plan` is the "
            "unrestricted auto plan measured in the same command.\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
