"""Issue 12, sixteenth session: detect with site_lists' first-k INT8 channel lists by a per-row histogram (this
tree) against the sort of every nonzero entry (the code before), alternating in one process on bench_scale's planted
random Llama (16 x 512, batch 8): the same report.json (without cost) and each form's time against a forward.

    python3 scripts/h200_session16/ab_site_lists.py [--config 8b] [--reps 9]
"""
import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import sysq  # noqa: E402
from sysq.capture import nonzero  # noqa: E402
from sysq.detect import activation as A  # noqa: E402
from bench_scale import _sync, build, forward, windows  # noqa: E402


def sorted_first_k(count, key, k):
    """The code before: every nonzero entry sorted, then the first k of each row."""
    rows, cols = nonzero(count)
    order = np.lexsort((-key[rows, cols], rows))
    cols = cols[order].tolist()
    ends = np.searchsorted(rows[order], np.arange(count.shape[0] + 1)).tolist()
    return [cols[lo:min(hi, lo + k)] for lo, hi in zip(ends, ends[1:])]


p = argparse.ArgumentParser()
p.add_argument("--config", default="8b")
p.add_argument("--reps", type=int, default=9)
a = p.parse_args()
dev = "cuda" if torch.cuda.is_available() else "cpu"
model = build(a.config, None, dev, torch.bfloat16 if dev == "cuda" else torch.float32)
ids = windows(model.config, 16, 512)
new = A._first_k_nonzero


def run(form):
    A._first_k_nonzero = new if form == "histogram" else sorted_first_k
    gc.collect()
    _sync()
    t = time.perf_counter()
    r = sysq.detect(model, ids, quiet=True, batch_size=8)
    _sync()
    return r, time.perf_counter() - t


run("histogram"), run("sort")
times, reports = {"histogram": [], "sort": [], "forward": []}, {}
for i in range(a.reps):
    for form in (("histogram", "sort") if i % 2 == 0 else ("sort", "histogram")):
        r, s = run(form)
        times[form].append(s)
        reports.setdefault(form, json.dumps({**r.to_dict(), "cost": None}, sort_keys=True))
    _sync()
    t = time.perf_counter()
    forward(model, ids, 8)
    _sync()
    times["forward"].append(time.perf_counter() - t)
fw = statistics.median(times["forward"])
print(f"config {a.config}, 16 x 512, batch 8, {dev}" + (f" ({torch.cuda.get_device_name()})" if dev == "cuda" else ""))
for k, v in times.items():
    m = statistics.median(v)
    print(f"{k:9s} median {m:.3f} s ({m / fw:.2f}x forward); runs " + ", ".join(f"{x:.3f}" for x in v))
print("reports identical (without cost)" if reports["histogram"] == reports["sort"] else "REPORTS DIFFER")
