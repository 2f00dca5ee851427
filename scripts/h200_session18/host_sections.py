"""Where detect's host time goes (issue 12, eighteenth session): each function device_sections.py labels (hooks,
the chunk's reductions, the weights, the copies, the report) timed on the host, exclusive of the labelled functions it
calls, per detect (median over reps); the rest is "(other)": the model's forward and detect's own code. Then one
cProfile of a detect by own time.

    python3 scripts/h200_session18/host_sections.py [--config 8b] [--reps 5] [--top 40]
"""
from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import io
import pstats
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

import sysq  # noqa: E402
from bench_scale import _sync, build, forward, windows  # noqa: E402
from device_sections import install  # noqa: E402

OWN: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)
STACK: list[list] = []          # [name, start, time spent in labelled callees]


def timed(name, fn):
    @functools.wraps(fn)
    def wrapped(*a, **k):
        STACK.append([name, time.perf_counter(), 0.0])
        try:
            return fn(*a, **k)
        finally:
            n, t0, inner = STACK.pop()
            dt = time.perf_counter() - t0
            OWN[n] += dt - inner
            CALLS[n] += 1
            if STACK:
                STACK[-1][2] += dt
    return wrapped


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="8b")
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--top", type=int, default=40)
    a = p.parse_args()
    cuda = torch.cuda.is_available()
    model = build(a.config, a.layers, "cuda" if cuda else "cpu", torch.bfloat16 if cuda else torch.float32)
    ids = windows(model.config, a.windows, a.seqlen)
    forward(model, ids[:1], 1)
    install(timed)
    sysq.detect(model, ids, quiet=True, batch_size=a.batch_size)
    per: dict[str, list[float]] = defaultdict(list)
    walls = []
    for _ in range(a.reps):
        gc.collect()
        _sync()
        OWN.clear()
        CALLS.clear()
        t = time.perf_counter()
        sysq.detect(model, ids, quiet=True, batch_size=a.batch_size)
        walls.append(time.perf_counter() - t)     # the host's time (no sync: detect returns once its report is built)
        _sync()
        for k, v in OWN.items():
            per[k].append(v)
        per["(other)"].append(walls[-1] - sum(OWN.values()))
    calls = dict(CALLS)
    print(f"detect on {a.windows} x {a.seqlen}, batch {a.batch_size}, config {a.config}: host wall median "
          f"{statistics.median(walls) * 1e3:.1f} ms over {a.reps}")
    print("| function (own time) | calls / detect | host ms (median) |\n|---|---|---|")
    for k, v in sorted(per.items(), key=lambda kv: -statistics.median(kv[1])):
        print(f"| {k} | {calls.get(k, '')} | {statistics.median(v) * 1e3:.2f} |")
    prof = cProfile.Profile()
    gc.collect()
    _sync()
    prof.enable()
    sysq.detect(model, ids, quiet=True, batch_size=a.batch_size)
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(a.top)
    print("==== cProfile of one detect by own time\n" + s.getvalue()[-16000:])


if __name__ == "__main__":
    main()
