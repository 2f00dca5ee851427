"""Where detect's host time goes before the first batch and after the last one (issue 12, seventeenth session): each
function sysq.detect calls there, timed on the host (the device is idle in both: before the first launch and after
the last flush), median over reps; then one cProfile of the tail (after the last flush) by cumulative time.

    python3 scripts/h200_session17/tail_sections.py [--config 8b] [--reps 7] [--layers N] [--windows 16 --seqlen 512]
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import sysq  # noqa: E402
from sysq import capture  # noqa: E402
from bench_scale import _sync, build, windows  # noqa: E402

det = sys.modules["sysq.detect"]
TIMES: dict[str, list[float]] = {}
PROF = cProfile.Profile()
STATE = {"tail": False, "profile": False}


def timed(name, fn):
    def wrapped(*a, **k):
        t = time.perf_counter()
        out = fn(*a, **k)
        if name == "flush":
            _sync()
        TIMES.setdefault(name, []).append(time.perf_counter() - t)
        return out
    return wrapped


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="8b")
    p.add_argument("--model", default=None, help="a sysq.load spec (e.g. smollm2-135m) with WikiText-2 windows "
                   "instead of the random --config model")
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--top", type=int, default=60)
    a = p.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if a.model:
        model, tok = sysq.load(a.model, device=dev)
        ids = sysq.windows("wikitext2", tok, n=a.windows, seqlen=a.seqlen, seed=0)
    else:
        model = build(a.config, a.layers, dev, torch.bfloat16 if dev == "cuda" else torch.float32)
        ids = windows(model.config, a.windows, a.seqlen)
    sysq.detect(model, ids, quiet=True, batch_size=a.batch_size)
    for name in ("get_adapter", "_as_ids", "choose_pipeline", "Recorder", "site_lists", "site_summary",
                 "residual_channels", "down_rows", "channel_lifecycle", "groups_of", "feature_consistency",
                 "attention_summary", "sequence_consistency", "_outlier_tokens", "_summary", "_arrays",
                 "_start_statistics", "start_weights", "Namer"):
        setattr(det, name, timed(name, getattr(det, name)))
    for name in ("attach", "flush", "detach", "run"):
        setattr(capture.Recorder, name, timed(name, getattr(capture.Recorder, name)))
    walls = []
    for r in range(a.reps):
        gc.collect()
        _sync()
        t = time.perf_counter()
        sysq.detect(model, ids, quiet=True, batch_size=a.batch_size)
        _sync()
        walls.append(time.perf_counter() - t)
    reps = a.reps
    print(f"| function | calls / detect | ms / detect (median) |")
    print("|---|---|---|")
    for name, v in TIMES.items():
        n = len(v) // reps
        per = [sum(v[i * n:(i + 1) * n]) * 1e3 for i in range(reps)]
        print(f"| {name} | {n} | {statistics.median(per):.2f} |")
    print(f"wall median {statistics.median(walls) * 1e3:.1f} ms over {reps}")
    # one profile of everything after the last flush
    flush = capture.Recorder.flush

    def flush_then_profile(self, *a, **k):
        out = flush(self, *a, **k)
        if STATE["profile"]:
            PROF.enable()
        return out
    capture.Recorder.flush = flush_then_profile
    gc.collect()
    _sync()
    STATE["profile"] = True
    sysq.detect(model, ids, quiet=True, batch_size=a.batch_size)
    PROF.disable()
    for order in ("cumulative", "tottime"):
        s = io.StringIO()
        pstats.Stats(PROF, stream=s).sort_stats(order).print_stats(a.top)
        print(f"==== tail by {order}\n" + s.getvalue()[-14000:])


if __name__ == "__main__":
    main()
