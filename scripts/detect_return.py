"""How long sysq.detect takes after its report is built (issue 12): on SmolLM2-135M and WikiText-2 windows, per
detect the milliseconds from the last flush to the end of _arrays (the report's last step), from there until detect
has returned (freeing the Recorder, the garbage collector re-enabled), and the garbage collections that ran in that
second span (generation, ms).

    SYSQ_DATA=../shared/data python scripts/detect_return.py [--reps 7] [--windows 8 --seqlen 256]
"""
import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sysq  # noqa: E402
from sysq import capture  # noqa: E402

T: dict = {}
COLLECTIONS: list = []


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--windows", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=256)
    a = p.parse_args()
    model, tok = sysq.load("smollm2-135m")
    ids = sysq.windows("wikitext2", tok, n=a.windows, seqlen=a.seqlen, seed=0)
    det = sys.modules["sysq.detect"]
    flush, arrays = capture.Recorder.flush, det._arrays

    def timed_flush(self, *x, **k):
        out = flush(self, *x, **k)
        T["flush"] = time.perf_counter()
        return out

    def timed_arrays(*x, **k):
        out = arrays(*x, **k)
        T["arrays"] = time.perf_counter()
        return out
    capture.Recorder.flush, det._arrays = timed_flush, timed_arrays

    def on_gc(phase, info):
        if phase == "start":
            COLLECTIONS.append([info["generation"], time.perf_counter()])
        else:
            COLLECTIONS[-1].append(time.perf_counter())
    gc.callbacks.append(on_gc)
    sysq.detect(model, ids, quiet=True, batch_size=4)
    print("| rep | flush -> report built ms | report built -> returned ms | collections after the report (gen, ms) |")
    print("|---|---|---|---|")
    for r in range(a.reps):
        COLLECTIONS.clear()
        sysq.detect(model, ids, quiet=True, batch_size=4)
        end = time.perf_counter()
        after = [(g, round((t1 - t0) * 1e3, 1)) for g, t0, t1 in COLLECTIONS if t0 >= T["arrays"]]
        print(f"| {r} | {(T['arrays'] - T['flush']) * 1e3:.1f} | {(end - T['arrays']) * 1e3:.1f} | {after} |")


if __name__ == "__main__":
    main()
