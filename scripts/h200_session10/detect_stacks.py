"""Device time of one detect at 8B, attributed to the Python line that launched each kernel (issue 12).

    python scripts/h200_session10/detect_stacks.py [--attention-windows 8] [--top 40]

torch.profiler with stacks; each CPU op's own device time goes to its innermost sysq/ or transformers frame
(the hooks' and the reductions' work, or the model's own). A plain forward (sdpa) and an eager-attention forward are profiled the same way,
so the model's lines can be compared.
"""
import argparse
import bisect
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from torch.autograd import DeviceType  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

import sysq  # noqa: E402
from bench_scale import build, forward, windows  # noqa: E402
from sysq.detect.attention import eager_attention  # noqa: E402



def where(stack) -> str:
    for fr in stack:                   # innermost first
        if "/sysq/" in fr:
            return "sysq " + fr.split("/sysq/")[-1]
        if "modeling_" in fr or "transformers/integrations" in fr or "transformers/masking" in fr:
            return "model " + fr.split("/transformers/")[-1]
    return "other " + (stack[0].split("/")[-1] if stack else "?")


def stacks_at(py, times):
    """The Python frames open at each of `times` (sorted), innermost first: a sweep over the frames' intervals
    (torch >= 2.13 records them as events), or the stack of the last op that started before (torch 2.11 keeps a
    stack on each op instead; `py` holds those ops)."""
    if py and not any(".py(" in e.name for e in py[:50]):
        ops = sorted(py, key=lambda e: e.time_range.start)
        starts = [e.time_range.start for e in ops]
        return [list(ops[i - 1].stack) if i else [] for i in (bisect.bisect_right(starts, t) for t in times)]
    py = sorted(py, key=lambda e: (e.time_range.start, -e.time_range.end))
    out, open_, i = [], [], 0
    for t in times:
        while i < len(py) and py[i].time_range.start <= t:
            open_.append(py[i])
            i += 1
        open_ = [e for e in open_ if e.time_range.end >= t]
        out.append(["/" + e.name for e in sorted(open_, key=lambda e: -e.time_range.start)])
    return out


def attribute(fn, label, top):
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts, with_stack=True) as prof:
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    cuda = torch.cuda.is_available()
    evs = prof.events()
    cpu = [e for e in evs if e.device_type == DeviceType.CPU]
    frames = [e for e in cpu if ".py(" in e.name] or [e for e in cpu if e.stack]
    thread = collections.Counter(e.thread for e in frames).most_common(1)[0][0]
    py = [e for e in frames if e.thread == thread]
    # on a GPU the kernels hang on the CPU event that launched them (cudaLaunchKernel, cuLaunchKernelEx)
    timed = [(e, sum(k.duration for k in e.kernels) if cuda else e.self_cpu_time_total) for e in cpu
             if e.thread == thread and (e.kernels if cuda else ".py(" not in e.name)]
    if not timed and cuda:       # kernels linked to the ops instead of their launches
        timed = [(e, e.self_device_time_total) for e in cpu if e.thread == thread and e.self_device_time_total]
    timed = sorted([(e, t) for e, t in timed if t > 0], key=lambda x: x[0].time_range.start)
    ms, calls = collections.Counter(), collections.Counter()
    for (e, t), st in zip(timed, stacks_at(py, [e.time_range.start for e, _ in timed])):
        k = where(st)
        ms[k] += t / 1e3
        calls[k] += 1
    total = sum(ms.values())
    print(f"## {label}: device {total:.1f} ms (kernels attributed by launching line)")
    if total == 0:           # no kernel attributed: this torch links them otherwise; the plain table instead
        print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=30))
    groups = collections.Counter()
    for k, v in ms.items():
        groups[k.split(" ")[0] + " " + k.split(" ")[1].split("(")[0].rsplit(":", 1)[0]] += v
    for k, v in groups.most_common(12):
        print(f"  {k:60s} {v:8.1f} ms")
    for k, v in ms.most_common(top):
        print(f"| {k[:110]} | {v:.2f} | {calls[k]} |")
    if cuda:
        idle(evs, py, label)
    return total


def idle(evs, py, label):
    """The device's idle time inside the call, by what the host was doing then (the Python frames open at the middle
    of each gap of >= 10 us between kernels, and after the last kernel until the call returned)."""
    busy = sorted((e.time_range.start, e.time_range.end) for e in evs if e.device_type != DeviceType.CPU)
    if not busy:
        return
    merged = [list(busy[0])]
    for s0, e0 in busy[1:]:
        if s0 <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e0)
        else:
            merged.append([s0, e0])
    end = max(e.time_range.end for e in py)
    start = min(e.time_range.start for e in py)
    gaps = [(a[1], b[0]) for a, b in zip(merged, merged[1:]) if b[0] - a[1] >= 10]
    gaps = [(start, merged[0][0])] + gaps + [(merged[-1][1], end)]
    mids = sorted(((g0 + g1) / 2, g1 - g0) for g0, g1 in gaps)
    by_line, by_top = collections.Counter(), collections.Counter()
    for (t, d), st in zip(mids, stacks_at(py, [t for t, _ in mids])):
        by_line[where(st)] += d / 1e3
        sysq_frames = [f for f in st if "/sysq/" in f]
        by_top[sysq_frames[-2].split("/sysq/")[-1] if len(sysq_frames) > 1 else where(st)] += d / 1e3
    busy_ms = sum(b - a for a, b in merged) / 1e3
    print(f"### {label}: wall {(end - start) / 1e3:.1f} ms, device busy {busy_ms:.1f} ms, idle "
          f"{sum(by_line.values()):.1f} ms in {len(gaps)} gaps (>= 10 us, and before the first / after the last "
          f"kernel); idle by the host's frame under detect:")
    for k, v in by_top.most_common(12):
        print(f"  {k[:100]:100s} {v:8.2f} ms")
    print("  idle by the innermost frame:")
    for k, v in by_line.most_common(15):
        print(f"  {k[:100]:100s} {v:8.2f} ms")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--top", type=int, default=45)
    p.add_argument("--config", default="8b")
    p.add_argument("--seqlen", type=int, default=512)
    args = p.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = build(args.config, None, dev, torch.bfloat16 if dev == "cuda" else torch.float32)
    ids = windows(model.config, args.windows, args.seqlen)
    B = args.batch_size
    forward(model, ids, B)
    sysq.detect(model, ids, quiet=True, batch_size=B)
    sysq.detect(model, ids, quiet=True, batch_size=B)
    attribute(lambda: forward(model, ids, B), "plain forward (sdpa), 16 windows", 20)
    with eager_attention(model):
        forward(model, ids[:B], B)
        attribute(lambda: forward(model, ids[:B], B), "forward of 8 windows, eager attention", 20)
    attribute(lambda: sysq.detect(model, ids, quiet=True, batch_size=B), "detect, 16 windows", args.top)


if __name__ == "__main__":
    main()
