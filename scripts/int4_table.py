#!/usr/bin/env python
"""The INT4 table: sysq's INT4 variants and the peer libraries, on two disjoint evaluation window sets (first 40
windows and windows 40-79 of WikiText-2 raw test, 512 tokens), side by side, in one run.

    python scripts/int4_table.py --device cuda --out $OUT/int4                  # the device set (GPU_CONFIGS)
    python scripts/int4_table.py --configs cpu-peers --out out/int4-cpu         # peers that run on a CPU here
    python scripts/int4_table.py --device cuda --out $OUT/int4 --merge results/int4-cpu   # + those rows

Each configuration is quantized once (sysq rows kept under OUT/cache/models, peer checkpoints under
OUT/cache/peers) and measured on every set before the next configuration starts, so `--time-limit` (seconds)
stops between configurations with whole rows and the table is always written; rows already measured with the
same settings are reused, so a rerun continues where a limit stopped. `--merge DIR` adds the rows of another
int4_table run (e.g. the CPU peers), each against the FP row of its own run and device (said in the table).
Writes OUT/w0, OUT/w40 (the grid's outputs per set), OUT/table.md and OUT/table.json.
"""
import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.compare import GridSettings, Row, run_grid  # noqa: E402
from sysq.errors import SysqError  # noqa: E402
from sysq.io import atomic_write_text  # noqa: E402

# In order of priority (a time limit drops the tail). @auto: measured auto (candidates scored with RTN weights,
# the rules kept inside the proxy's noise; for weight-only INT4 no plan, learned rounding alone: plan.Learned);
# "+learned" after the plan replaces its GPTQ rounding by learned rounding (the recipe's +learnedNxB budget is
# kept); +gN puts the w4a8 / w4a4 weights in groups.
GPU_CONFIGS = (
    "fp,autoround-w4a16-g64,w4a16-g64,w4a16-g64+fz,w4a16-g64+fz+learned,"
    "w4a8@auto,w4a8+g64+fz@auto+learned,w4a4+kv4@auto,w4a4+kv4@auto+learned,w4a4+g64+kv4@auto+learned,"
    "w4a4+g64+ag64+kv4@auto+learned,"
    "w4a16-g64@auto,w4a16-g64+fz@auto+learned,bnb-nf4,w4a8+fz@auto+learned,"
    "w4a16-g64+fz+learned200x8,w4a16-g64+fz+learned200x8@auto+learned,w4a16-g128+fz+learned200x8")
# The best row of each format (docs/INT4.md), every peer beside them (auto-round at its defaults, llm-compressor GPTQ
# and AWQ, bitsandbytes NF4): one H200 runs them in about 6 minutes as one process per part
# (scripts/h200_session6/callI6.sh), or in one with --configs best; give --calib-n 32 (sysq quantize's default).
BEST = {
    "peer": "fp,autoround-w4a16-g64",
    "peers": "fp,llmc-gptq-w4a16-g64,llmc-awq-w4a16-g64,bnb-nf4",     # llm-compressor 0.14 and bitsandbytes 0.50
    # sysq's default INT4 (`sysq quantize --recipe w4a16`: auto for weight-only INT4 is learned rounding alone,
    # 200 x 1 steps under bf16 autocast, per-token loss, float zero points, g64: plan.learned_budget; 100 x 1 in
    # float32 until the twelfth session) and the same recipe named in full
    "w4a16": "fp,w4a16@auto",
    "w4a16-g64": "fp,w4a16-g64+fz+learned200x1+tokenloss+amp",
    # the sixth session's table (call I6, one H200, 32 calibration windows): 100 x 1 1.059 / 1.049, 200 x 1
    # 1.048 / 1.043, g128 1.070 / 1.069; with the rules' plan before it (the old auto) 1.079 / 1.071
    "w4a16-g64-200": "fp,w4a16-g64+fz+learned200x1+tokenloss",
    "w4a16-g128": "fp,w4a16-g128+fz+learned100x1+tokenloss",
    "w4a8": "fp,w4a8+g64+fz@auto+learned",
    "w4a4": "fp,w4a4+g64+kv4g32@auto+learned,w4a4+g64+ag64+kv4g32@auto+learned",
    # call I5's parts (scripts/h200_session5/callI5.sh); there @auto+learned ran the rules' plan first, which auto
    # no longer does for weight-only INT4
    "w4a16-g64-tok": "fp,w4a16-g64+fz+learned200x8+tokenloss@auto+learned",
    "w4a16-g128-tok": "fp,w4a16-g128+fz+learned200x8+tokenloss@auto+learned",
    "w4a16-g64-tok-noplan": "fp,w4a16-g64+fz+learned200x8+tokenloss",
}
# Peers that need no GPU (their venvs: scripts/peers/make_venv.sh llmcompressor / autoround; bnb on the CPU).
CPU_PEERS = "fp,llmc-gptq-w4a16-g64,llmc-awq-w4a16-g64,autoround-w4a16-g64-cpu"
NAMED = {"gpu": GPU_CONFIGS, "cpu-peers": CPU_PEERS, "all": GPU_CONFIGS + "," + CPU_PEERS.removeprefix("fp,"),
         "best": ",".join(dict.fromkeys(",".join(BEST.values()).split(","))),
         **{f"best-{k}": v for k, v in BEST.items()}}


def _what(r: Row, settings: GridSettings) -> str:
    what = r.info.get("description") or r.info.get("library") or ""
    n, length = r.settings.get("calib_n", settings.calib_n), r.settings.get("calib_seqlen", settings.calib_seqlen)
    if (n, length) != (settings.calib_n, settings.calib_seqlen):     # a merged part with its own calibration
        what += f"; calibration {n} x {length}"
    learned = (r.info.get("quant", {}).get("calibration") or {}).get("learned")
    if learned:
        what += f"; learned {learned['steps_per_layer']} steps/layer, {learned['seconds']:.0f} s"
    if r.info.get("library"):           # auto-round: its SignSGD budget; llm-compressor: its version and scheme
        s, i = r.info.get("settings", {}), r.info
        parts = [f"iters {s['iters']}, batch {s.get('batch_size')}"] if "iters" in s else \
            [f"{i.get('version', '')} {i.get('scheme', '')} g{i.get('group_size')}"]
        what += f" ({', '.join(parts)}, {i.get('seconds', 0):.0f} s)"
    return what.replace("|", "/")


def _row_id(r: Row) -> tuple:
    return r.config, r.settings.get("calib_n"), r.settings.get("calib_seqlen")


def table(sets: dict[int, list], settings: GridSettings, merged: dict[int, list] | None = None,
          note: str = "") -> str:
    offsets = sorted(sets)
    head = ["config", "what"] + [c for o in offsets for c in (f"ppl w{o}-{o + settings.windows - 1}", "x FP")] + \
        ["weights MiB", "quantize s", "device"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group in (sets, merged or {}):
        if not group:
            continue
        # one row per (config, calibration): merged parts may run one config with different calibration
        by_name = {o: {_row_id(r): r for r in rows} for o, rows in group.items()}
        first = group[min(group)]
        for r in first:
            if group is merged and r.config == "fp" and r.settings.get("device") == settings.device:
                continue
            cells = [r.config, _what(r, settings)]
            for o in offsets:
                x = by_name.get(o, {}).get(_row_id(r))
                ok = x is not None and x.status == "ok"
                cells += [f"{x.ppl:.3f}" if ok else (x.status if x else ""), f"{x.ppl_ratio:.3f}" if ok else ""]
            cells += [f"{r.weight_bytes / 2**20:.1f}" if r.weight_bytes else "", f"{r.seconds.get('quantize', 0):.0f}",
                      r.settings.get("device", "")]
            lines.append("| " + " | ".join(cells) + " |")
    s = settings
    lines += ["", f"Model {s.model} ({s.dtype}), WikiText-2 raw test, seqlen {s.seqlen}, BOS on; "
              f"calibration {s.calib_n} x {s.calib_seqlen} of WikiText-2 valid, seed {s.calib_seed}; auto plans from "
              f"a report on {s.detect_n} of them. x FP: against the FP row of the same set and device. {note}"]
    return "\n".join(lines) + "\n"


def _merged(folder: Path, offsets) -> dict[int, list]:
    """The rows of another int4_table run (its results.json per set), in its order."""
    out = {}
    for o in offsets:
        f = folder / f"w{o}" / "results.json"
        if not f.is_file():
            raise SysqError(f"--merge {folder}: no {f}; give the --out folder of another int4_table run")
        known = Row.__dataclass_fields__
        out[o] = [Row(**{k: v for k, v in d.items() if k in known}) for d in json.loads(f.read_text())["rows"]]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="gpu", help=f"comma-separated configurations or one of {', '.join(NAMED)} "
                   "(default: %(default)s)")
    p.add_argument("--offsets", default="0,40", help="window offsets of the evaluation sets (default: %(default)s)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--windows", type=int, default=40)
    p.add_argument("--seqlen", type=int, default=512, help="evaluation and calibration window length")
    p.add_argument("--calib-n", type=int, default=8)
    p.add_argument("--detect-n", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--time-limit", type=float, default=None,
                   help="seconds; no configuration starts after this (the table keeps the rows done)")
    p.add_argument("--merge", action="append", default=[], help="OUT folder of another int4_table run to add")
    p.add_argument("--out", default="out/int4")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if a.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(a.out)
    offsets = [int(o) for o in a.offsets.split(",")]
    configs = NAMED.get(a.configs, a.configs).split(",")
    grid = {o: GridSettings(model=a.model, seqlen=a.seqlen, calib_seqlen=a.seqlen, windows=a.windows, window_offset=o, tasks=(), calib_n=a.calib_n, detect_n=a.detect_n,
                            device=a.device) for o in offsets}
    for o, s in grid.items():
        print(f"int4 table: windows {o}-{o + a.windows - 1}: " + json.dumps(s.to_dict()))
    t0, done, skipped = time.perf_counter(), [], []
    try:
        merged = {}
        for folder in a.merge:
            rows = _merged(Path(folder), offsets)
            merged = {o: merged.get(o, []) + rows[o] for o in offsets}
        for cfg in configs:
            if a.time_limit is not None and time.perf_counter() - t0 > a.time_limit:
                skipped.append(cfg)
                continue
            t1 = time.perf_counter()
            for o in offsets:              # one row on every set before the next configuration
                run_grid([cfg], grid[o], out=out / f"w{o}", quiet=a.quiet, keep_models=True, cache=out / "cache")
            done.append(cfg)
            print(f"int4 table: {cfg} on {len(offsets)} sets in {time.perf_counter() - t1:.0f} s "
                  f"({time.perf_counter() - t0:.0f} s so far)", flush=True)
        sets = {o: run_grid(done, grid[o], out=out / f"w{o}", quiet=True, keep_models=True, cache=out / "cache")
                for o in offsets}       # every row reused: the per-set outputs hold the whole list
    except SysqError as e:
        print(f"int4_table: error: {e}", file=sys.stderr)
        return 2
    note = f"Run {time.perf_counter() - t0:.0f} s on {a.device}"
    if a.device.startswith("cuda"):
        import torch
        note += f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB (this process)"
    if skipped:
        note += f"; not run (time limit {a.time_limit:.0f} s): {', '.join(skipped)}"
    text = table(sets, grid[offsets[0]], merged, note + ".")
    atomic_write_text(out / "table.md", text)
    atomic_write_text(out / "table.json", json.dumps({f"w{o}": [r.to_dict() for r in sets[o]] for o in offsets},
                                                     indent=1, default=str))
    print(text)
    failed = [r.config for rows in sets.values() for r in rows if r.status != "ok"]
    if failed:
        print(f"failed: {', '.join(sorted(set(failed)))} (errors in {out}/w*/results.md)")
    return 2 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
