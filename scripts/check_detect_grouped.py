#!/usr/bin/env python
"""detect with the site reductions grouped (one launch per kernel for all same-shaped sites of a chunk) against one
launch per site: the same report.json (without `cost`), and the time of each, alternating in one process.

    python3 scripts/check_detect_grouped.py --config 8b --device cuda --reps 11      # on a GPU machine
    python scripts/check_detect_grouped.py --config tiny --reps 3                   # the CPU (no Triton: no groups)

The model is bench_scale.py's random Llama of the config with the planted outlier; 16 windows x 512 tokens, batch
8 unless told. Exit code 1 when the reports differ. Per-site launches are forced by making
sysq._reduce_triton.group_offsets refuse every group.
"""
import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import sysq  # noqa: E402
from bench_scale import _sync, build, forward, windows  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    dtype = torch.bfloat16 if a.device != "cpu" else torch.float32
    model = build(a.config, None, a.device, dtype)
    ids = windows(model.config, a.windows, a.seqlen)
    try:
        from sysq import _reduce_triton as R
    except ImportError:
        R = None
    grouped_ok = R.group_offsets if R is not None else None
    launches = {"grouped": 0}
    if R is not None:
        real = R.launch_group

        def counted(*args, **kw):
            launches["grouped"] += 1
            return real(*args, **kw)
        R.launch_group = counted

    def run(form: str):
        if R is not None:
            R.group_offsets = grouped_ok if form == "grouped" else (lambda xs: None)
        gc.collect()
        _sync()
        t = time.perf_counter()
        rep = sysq.detect(model, ids, quiet=True, batch_size=a.batch_size)
        _sync()
        return rep, time.perf_counter() - t

    run("grouped"), run("per-site")                    # warm-up: compile both forms
    forward(model, ids, a.batch_size)
    launches["grouped"] = 0
    reports, times = {}, {"grouped": [], "per-site": [], "forward": []}
    for i in range(a.reps):
        for form in (("grouped", "per-site") if i % 2 == 0 else ("per-site", "grouped")):
            rep, s = run(form)
            times[form].append(s)
            reports.setdefault(form, rep)
        _sync()
        t = time.perf_counter()
        forward(model, ids, a.batch_size)
        _sync()
        times["forward"].append(time.perf_counter() - t)
    dump = {k: json.dumps({**r.to_dict(), "cost": None}, sort_keys=True) for k, r in reports.items()}
    same = dump["grouped"] == dump["per-site"]
    print(f"config {a.config}, {a.windows} x {a.seqlen}, batch {a.batch_size}, {dtype}, device {a.device}"
          f"{' (' + torch.cuda.get_device_name() + ')' if a.device == 'cuda' else ''}, torch {torch.__version__}; "
          f"grouped launches per detect {launches['grouped'] / a.reps:.0f}")
    fw = statistics.median(times["forward"])
    for k in ("forward", "grouped", "per-site"):
        med = statistics.median(times[k])
        print(f"{k:9s} median {med:.3f} s ({med / fw:.2f}x forward); runs " + ", ".join(f"{t:.3f}" for t in times[k]))
    print("reports identical (without cost)" if same else "REPORTS DIFFER")
    if not same:
        x, y = dump["grouped"], dump["per-site"]
        i = next(i for i in range(min(len(x), len(y))) if x[i] != y[i]) if x[:len(y)] != y[:len(x)] else min(len(x), len(y))
        print("first difference at", i, ":", x[max(0, i - 200):i + 200], "|||", y[max(0, i - 200):i + 200])
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
