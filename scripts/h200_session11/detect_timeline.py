"""Where detect's wall time goes on a GPU, as a timeline (issue 12): for each phase the host's time and the time the
device reached the same point (CUDA events recorded there), both from detect's start. A host mark far ahead of its
device mark: the host waits later; a device mark at the host mark: the device waited for the host.

    python scripts/h200_session11/detect_timeline.py [--reps 5]
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import sysq  # noqa: E402
from sysq import capture  # noqa: E402
from bench_scale import build, forward, windows  # noqa: E402

MARKS: list[tuple[str, float, torch.cuda.Event]] = []


def mark(name: str) -> None:
    ev = torch.cuda.Event(enable_timing=True)
    ev.record()
    MARKS.append((name, time.perf_counter(), ev))


def wrap(cls, name: str, label: str) -> None:
    fn = getattr(cls, name)

    def wrapped(self, *a, **k):
        mark(f"{label} start")
        out = fn(self, *a, **k)
        mark(f"{label} end")
        return out
    setattr(cls, name, wrapped)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args()
    model = build("8b", None, "cuda", torch.bfloat16)
    ids = windows(model.config, 16, 512)
    forward(model, ids[:1], 1)
    sysq.detect(model, ids, quiet=True, batch_size=args.batch_size)
    wrap(capture.Recorder, "run", "run")
    wrap(capture.Recorder, "flush", "flush")
    wrap(capture.Recorder, "_close_chunk", "close")
    det = sys.modules["sysq.detect"]
    wrap_fn = det.start_weights

    def sw(*a, **k):
        mark("weights queued start")
        done = wrap_fn(*a, **k)
        mark("weights queued end")

        def finish():
            mark("weights finish start")
            out = done()
            mark("weights finish end")
            return out
        return finish
    det.start_weights = sw
    rows: dict[str, list[tuple[float, float]]] = {}
    walls = []
    for r in range(args.reps):
        gc.collect()
        torch.cuda.synchronize()
        MARKS.clear()
        mark("start")
        sysq.detect(model, ids, quiet=True, batch_size=args.batch_size)
        mark("end")
        torch.cuda.synchronize()
        t0, e0 = MARKS[0][1], MARKS[0][2]
        walls.append(MARKS[-1][1] - t0)
        seen: dict[str, int] = {}
        for name, t, ev in MARKS:
            seen[name] = seen.get(name, 0) + 1
            key = f"{name} #{seen[name]}"
            rows.setdefault(key, []).append(((t - t0) * 1e3, e0.elapsed_time(ev)))
        print(f"rep {r}: wall {walls[-1]:.3f} s", flush=True)
    print("| mark | host ms (median) | device ms (median) | device - host |")
    print("|---|---|---|---|")
    for key, v in rows.items():
        h = statistics.median(x for x, _ in v)
        d = statistics.median(y for _, y in v)
        print(f"| {key} | {h:.1f} | {d:.1f} | {d - h:+.1f} |")
    print(f"wall median {statistics.median(walls):.3f} s")


if __name__ == "__main__":
    main()
