"""Where detect's time goes at 8B on one GPU (issue 12): host vs device, per variant, and a cProfile of the host.

    python scripts/h200_session9/detect_where.py --batch-size 8

Rows (each the median of --reps, synchronized): the plain forward; detect (default kernel and each --kernels
design); detect without the attention statistics (attention=False), and with them on all windows; the device's
busy time of one detect (torch.profiler: the sum of kernel times) against its wall time. Then cProfile of one
detect: the host functions by own time and by cumulative time.
"""
import argparse
import cProfile
import gc
import io
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

import sysq  # noqa: E402
from bench_scale import build, forward, windows  # noqa: E402


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, reps):
    ts = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), ts


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="8b")
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--kernels", default="fused,split")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--variants", action="store_true", help="also attention=False and attention on every window")
    p.add_argument("--quick", action="store_true", help="only the timed rows (no profiles)")
    args = p.parse_args()
    from sysq import _reduce_triton as R
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = build(args.config, None, dev, torch.bfloat16 if dev == "cuda" else torch.float32)
    ids = windows(model.config, args.windows, args.seqlen)
    B = args.batch_size
    forward(model, ids[:1], 1)
    fwd, ts = timed(lambda: forward(model, ids, B), args.reps)
    print(f"| forward | {fwd:.3f} | 1.00 | {', '.join(f'{t:.3f}' for t in ts)} |", flush=True)

    # every variant timed in turn, rep by rep (a drift over the run falls on all alike)
    variants = [(f"detect ({k})", k, {}) for k in args.kernels.split(",")]
    last = variants[-1][1]
    if args.variants:
        variants += [("detect, attention=False", last, dict(attention=False)),
                     (f"detect, attention on all {args.windows} windows", last, dict(attention_windows=None))]
    times = {name: [] for name, _, _ in variants}
    costs = {name: [] for name, _, _ in variants}
    gc_s = {name: [] for name, _, _ in variants}
    pause = {}

    def on_gc(phase, info):         # seconds spent in full (generation 2) collections
        if info["generation"] == 2:
            if phase == "start":
                pause["t"] = time.perf_counter()
            elif "t" in pause:
                pause["s"] = pause.get("s", 0.0) + time.perf_counter() - pause.pop("t")
    gc.callbacks.append(on_gc)
    for name, k, kw in variants:
        R.use(k)
        sysq.detect(model, ids[:1], quiet=True, batch_size=B, **kw)
        sysq.detect(model, ids, quiet=True, batch_size=B, **kw)
    for _ in range(args.reps):
        for name, k, kw in variants:
            R.use(k)
            out, pause["s"] = {}, 0.0
            times[name] += timed(lambda: out.setdefault("r", sysq.detect(model, ids, quiet=True, batch_size=B,
                                                                         **kw)), 1)[1]
            c = out["r"].cost
            costs[name].append(times[name][-1] - c["pass_s"] - c["weights_s"])
            gc_s[name].append(pause["s"])
    for name, ts in times.items():
        s = statistics.median(ts)
        print(f"| {name} | {s:.3f} | {s / fwd:.2f} | min {min(ts):.3f} | {', '.join(f'{t:.3f}' for t in ts)} | "
              f"report {statistics.median(costs[name]):.3f} | gen2 gc {', '.join(f'{t:.3f}' for t in gc_s[name])} |",
              flush=True)
    fwd2, ts = timed(lambda: forward(model, ids, B), args.reps)
    print(f"| forward (again) | {fwd2:.3f} | {fwd2 / fwd:.2f} | {', '.join(f'{t:.3f}' for t in ts)} |", flush=True)
    R.use(args.kernels.split(",")[-1])
    if args.quick:
        return

    # device busy time of one detect vs its wall time
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        sync()
        t = time.perf_counter()
        sysq.detect(model, ids, quiet=True, batch_size=B)
        sync()
        wall = time.perf_counter() - t
    ev = [e for e in prof.key_averages()]
    busy = sum(e.self_device_time_total for e in ev) / 1e6
    print(f"profiled detect ({R.VARIANT}): wall {wall:.3f} s, device kernels {busy:.3f} s (summed)")
    tab = prof.key_averages().table(sort_by="self_device_time_total", row_limit=25)
    print("\n".join(line[:60] + line[-60:] for line in tab.splitlines()))
    callers = ("float", "'to'", "topk", "nonzero", "argsort", "_const", "ids_on")

    pr = cProfile.Profile()
    sync()
    t = time.perf_counter()
    pr.enable()
    sysq.detect(model, ids, quiet=True, batch_size=B)
    sync()
    pr.disable()
    print(f"cProfiled detect: wall {time.perf_counter() - t:.3f} s")
    for key in ("tottime", "cumulative"):
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats(key).print_stats("sysq" if key == "cumulative" else "", args.top)
        out = s.getvalue()
        print("\n".join(out.splitlines()[:args.top + 12]))
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_callers("|".join(callers))
    print("\n".join(line[:200] for line in s.getvalue().splitlines()[:80]))


if __name__ == "__main__":
    main()
