"""Where detect's device time goes (issue 12, eighteenth session): torch.profiler over one detect (after a warm-up),
every kernel charged to the innermost sysq function that launched it (the hooks, the chunk's reductions, the
weights' statistics, the copies) or to the model's own forward; then the same for a plain forward of the windows.

    python3 scripts/h200_session18/device_sections.py [--config 8b] [--windows 16 --batch-size 8] [--top 40]
"""
from __future__ import annotations

import argparse
import functools
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.autograd import DeviceType  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

import sysq  # noqa: E402
from sysq import capture  # noqa: E402
from sysq.detect import weight  # noqa: E402
from bench_scale import _sync, build, forward, windows  # noqa: E402

det = sys.modules["sysq.detect"]
PREFIX = "sec:"
# methods of capture.Recorder that make hooks: the hooks they return are labelled with the factory's name
HOOK_FACTORIES = ("_layer_in", "_site", "_stash_input", "_stash_output", "_stash_qkv", "_attn", "_layer_out",
                  "_host_share")
RECORDER = ("_reduce_sites", "_hits_dense", "_hits_sparse", "_attention", "_qkv_norms", "_close_chunk", "_merge",
            "_step_backlog", "flush", "begin")
CAPTURE_FUNCS = ("_residuals", "reduce_fused", "reduce_stacked", "start_to_host", "merge")
DETECT_FUNCS = ("start_weights", "_start_statistics", "site_lists", "site_summary", "_outlier_tokens",
                "attention_summary", "down_rows", "_arrays", "Namer")
WEIGHT_FUNCS = ("_on_device", "column_stats")


def labelled(name, fn):
    @functools.wraps(fn)
    def wrapped(*a, **k):
        with record_function(PREFIX + name):
            return fn(*a, **k)
    return wrapped


def hook_factory(name, factory, wrap):
    @functools.wraps(factory)
    def make(self, *a, **k):
        return wrap(f"hook {name}", factory(self, *a, **k))
    return make


def install(wrap=labelled) -> None:
    """Every function named above wrapped by wrap(name, fn) (hooks: the hooks the factories make)."""
    for n in HOOK_FACTORIES:
        if hasattr(capture.Recorder, n):
            setattr(capture.Recorder, n, hook_factory(n, getattr(capture.Recorder, n), wrap))
    for n in RECORDER:
        if hasattr(capture.Recorder, n):
            setattr(capture.Recorder, n, wrap(n, getattr(capture.Recorder, n)))
    for n in CAPTURE_FUNCS:
        if hasattr(capture, n):
            setattr(capture, n, wrap(n, getattr(capture, n)))
    for n in DETECT_FUNCS:
        if hasattr(det, n):
            setattr(det, n, wrap(n, getattr(det, n)))
    for n in WEIGHT_FUNCS:
        setattr(weight, n, wrap(n, getattr(weight, n)))


def charged(prof, device: bool) -> tuple[dict, dict]:
    """Device (or CPU) self time per innermost label, and per (label, op)."""
    by_label: dict[str, float] = defaultdict(float)
    by_op: dict[tuple, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for ev in prof.events():
        if ev.device_type != DeviceType.CPU:      # kernels are counted through the CPU event that launched them
            continue
        if ev.name.startswith(PREFIX):
            calls[ev.name[len(PREFIX):]] += 1
            continue
        parts = [(k.name, k.duration) for k in ev.kernels] if device else [(ev.name, ev.self_cpu_time_total)]
        if not any(t for _, t in parts):
            continue
        label = label_of(ev.cpu_parent)
        for name, t in parts:
            by_label[label] += t
            by_op[(label, name)] += t
    return by_label, by_op, calls


def label_of(ev) -> str:
    p = ev
    while p is not None:
        if p.name.startswith(PREFIX):
            return p.name[len(PREFIX):]
        p = p.cpu_parent
    return "(model forward)"


def gaps(prof, top: int) -> str:
    """The device's span over the profiled region against its kernels' and copies' time, the idle time between
    them by gap size, and the largest gaps with the kernel after each. The profiler slows the host, so these gaps
    include some the host makes (call B18: 120 ms idle profiled, against ~36 ms from the unprofiled timeline); the
    kernels could not be tied back to their launching op on the device's torch 2.11 (linked ids did not match)."""
    evs = prof.events()
    dev = sorted((ev for ev in evs if ev.device_type != DeviceType.CPU and not ev.name.startswith(PREFIX)
                  and not ev.name.startswith("phase:")), key=lambda e: e.time_range.start)
    if not dev:
        return "no device events"
    rows, busy, end = [], 0.0, dev[0].time_range.start
    for ev in dev:
        busy += ev.time_range.elapsed_us()
        g = ev.time_range.start - end
        if g > 0:
            rows.append((g, ev.name))
        end = max(end, ev.time_range.end)
    span = end - dev[0].time_range.start
    out = [f"device span {span / 1e3:.1f} ms, kernels and copies {busy / 1e3:.1f} ms, idle {(span - busy) / 1e3:.1f} "
           f"ms (gaps > 0: {len(rows)})", "", "| idle us | kernel after the gap |", "|---|---|"]
    out += [f"| {g:.0f} | {name[:90]} |" for g, name in sorted(rows, reverse=True)[:top]]
    hist = defaultdict(float)
    for g, _ in rows:
        hist[next(b for b in (2, 5, 10, 50, 200, 1000, 1e12) if g <= b)] += g
    out += ["", "idle by gap size (us: ms): " + ", ".join(f"<= {b:g}: {v / 1e3:.1f}" for b, v in sorted(hist.items()))]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="8b")
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--top", type=int, default=40)
    a = p.parse_args()
    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    model = build(a.config, a.layers, dev, torch.bfloat16 if cuda else torch.float32)
    ids = windows(model.config, a.windows, a.seqlen)
    install()
    forward(model, ids[:1], 1)
    sysq.detect(model, ids, quiet=True, batch_size=a.batch_size)
    _sync()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    unit = "device" if cuda else "CPU"
    with profile(activities=acts) as prof:
        sysq.detect(model, ids, quiet=True, batch_size=a.batch_size)
        _sync()
    with profile(activities=acts) as plain:
        with torch.no_grad():
            forward(model, ids, a.batch_size)
        _sync()
    by_label, by_op, calls = charged(prof, cuda)
    p_label, p_op, _ = charged(plain, cuda)
    total = sum(by_label.values()) / 1e3
    print(f"detect on {a.windows} x {a.seqlen}, batch {a.batch_size}, config {a.config}: {unit} self time "
          f"{total:.1f} ms; plain forward of the same windows {sum(p_label.values()) / 1e3:.1f} ms")
    print(f"\n| charged to | calls | {unit} ms |\n|---|---|---|")
    for k, v in sorted(by_label.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {calls.get(k, '')} | {v / 1e3:.2f} |")
    print(f"\n| charged to | op / kernel | {unit} ms |\n|---|---|---|")
    for (lab, op), v in sorted(by_op.items(), key=lambda kv: -kv[1])[:a.top]:
        print(f"| {lab} | {op[:90]} | {v / 1e3:.2f} |")
    if cuda:
        print("\ndetect:", gaps(prof, a.top))
        print("\nplain forward:", gaps(plain, 10))
    print(f"\nplain forward, top ops:\n| op / kernel | {unit} ms |\n|---|---|")
    for (lab, op), v in sorted(p_op.items(), key=lambda kv: -kv[1])[:15]:
        print(f"| {op[:90]} | {v / 1e3:.2f} |")


if __name__ == "__main__":
    main()
