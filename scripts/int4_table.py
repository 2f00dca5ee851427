#!/usr/bin/env python
"""The INT4 table: sysq's INT4 variants and the peer libraries, one grid run per evaluation window set
(first 40 windows and windows 40-79 of WikiText-2 raw test, 512 tokens), side by side.

    python scripts/int4_table.py --out results/int4 [--configs ...] [--device cuda]

Each configuration is quantized once (sysq rows kept under OUT/cache/models, peer checkpoints under
OUT/cache/peers) and measured on both sets by evaluation/compare.py; rows already measured with the same
settings are reused, so the command can be rerun (or run a few rows at a time with --configs) and the table
grows. Writes OUT/w0 and OUT/w40 (the grid's outputs per set) and OUT/table.md.
"""
import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.compare import GridSettings, run_grid  # noqa: E402
from sysq.errors import SysqError  # noqa: E402
from sysq.io import atomic_write_text  # noqa: E402

CONFIGS = ("fp,bnb-nf4,autoround-w4a16-g64-cpu,autoround-w4a16-g128-cpu,"
           "w4a16-g64,w4a16-g64+fz,w4a16-g64+fz+learned,w4a16-g64@auto,w4a16-g64+fz@auto+learned,"
           "w4a16-g128,w4a16-g128+fz@auto+learned,w4a8@auto,w4a8+fz@auto+learned,w4a4+kv4@auto")


def table(sets: dict[int, list], settings: GridSettings) -> str:
    offsets = sorted(sets)
    head = ["config", "what"] + [c for o in offsets for c in (f"ppl w{o}-{o + settings.windows - 1}", "x FP")] + \
        ["weights MiB", "quantize s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_name = {o: {r.config: r for r in rows} for o, rows in sets.items()}
    for r in sets[offsets[0]]:
        what = r.info.get("description") or r.info.get("library") or ""
        learned = (r.info.get("quant", {}).get("calibration") or {}).get("learned")
        if learned:
            what += f"; learned {learned['steps_per_layer']} steps/layer, {learned['seconds']:.0f} s"
        if r.info.get("library"):
            s = r.info.get("settings", {})
            what += f" (iters {s.get('iters')}, batch {s.get('batch_size')}, {r.info.get('seconds', 0):.0f} s)"
        cells = [r.config, what.replace("|", "/")]
        for o in offsets:
            x = by_name[o].get(r.config)
            ok = x is not None and x.status == "ok"
            cells += [f"{x.ppl:.3f}" if ok else (x.status if x else ""), f"{x.ppl_ratio:.3f}" if ok else ""]
        cells += [f"{r.weight_bytes / 2**20:.1f}" if r.weight_bytes else "", f"{r.seconds.get('quantize', 0):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    s = settings
    lines += ["", f"Model {s.model} ({s.dtype}), WikiText-2 raw test, seqlen {s.seqlen}, BOS on; "
              f"calibration {s.calib_n} x {s.calib_seqlen} of WikiText-2 valid, seed {s.calib_seed}; auto plans from "
              f"a report on {s.detect_n} of them; device {s.device}. x FP: against the FP row of the same set."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default=CONFIGS)
    p.add_argument("--offsets", default="0,40", help="window offsets of the evaluation sets (default: %(default)s)")
    p.add_argument("--windows", type=int, default=40)
    p.add_argument("--calib-n", type=int, default=8)
    p.add_argument("--detect-n", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="out/int4")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if a.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(a.out)
    sets = {}
    try:
        for off in (int(o) for o in a.offsets.split(",")):
            settings = GridSettings(windows=a.windows, window_offset=off, tasks=(), calib_n=a.calib_n,
                                    detect_n=a.detect_n, device=a.device)
            print(f"int4 table: windows {off}-{off + a.windows - 1}: " + json.dumps(settings.to_dict()))
            sets[off] = run_grid(a.configs.split(","), settings, out=out / f"w{off}", quiet=a.quiet,
                                 keep_models=True, cache=out / "cache")
    except SysqError as e:
        print(f"int4_table: error: {e}", file=sys.stderr)
        return 2
    text = table(sets, settings)
    atomic_write_text(out / "table.md", text)
    print(text)
    failed = [r.config for rows in sets.values() for r in rows if r.status != "ok"]
    if failed:
        print(f"failed: {', '.join(failed)} (errors in {out}/w*/results.md)")
    return 2 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
