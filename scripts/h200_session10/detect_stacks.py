"""Device time of one detect at 8B, attributed to the Python line that launched each kernel (issue 12).

    python scripts/h200_session10/detect_stacks.py [--attention-windows 8] [--top 40]

torch.profiler with stacks; each CPU op's own device time goes to its innermost sysq/ or transformers frame
(the hooks' and the reductions' work, or the model's own). A plain forward (sdpa) and an eager-attention forward are profiled the same way,
so the model's lines can be compared.
"""
import argparse
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
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


def stack_of(e) -> list:
    """The Python frames above an op, innermost first (this torch's profiler keeps them as parent events)."""
    out, p = [], e.cpu_parent
    while p is not None:
        if ".py(" in p.name:
            out.append("/" + p.name)
        p = p.cpu_parent
    return out


def attribute(fn, label, top):
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts, with_stack=True) as prof:
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    ms, calls = collections.Counter(), collections.Counter()
    cuda = torch.cuda.is_available()
    for e in prof.events():
        # on a GPU the kernels hang on the CPU event that launched them (cudaLaunchKernel, cuLaunchKernelEx)
        t = sum(k.duration for k in getattr(e, "kernels", ())) if cuda else e.self_cpu_time_total
        if t <= 0:
            continue
        k = where(stack_of(e))
        ms[k] += t / 1e3
        calls[k] += 1
    total = sum(ms.values())
    if total == 0:           # no kernel attributed: this torch links them otherwise; the plain table instead
        print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=30))
    print(f"## {label}: device {total:.1f} ms (kernels attributed by launching line)")
    groups = collections.Counter()
    for k, v in ms.items():
        groups[k.split(" ")[0] + " " + k.split(" ")[1].split("(")[0].rsplit(":", 1)[0]] += v
    for k, v in groups.most_common():
        print(f"  {k:60s} {v:8.1f} ms")
    for k, v in ms.most_common(top):
        print(f"| {k[:110]} | {v:.2f} | {calls[k]} |")
    return total


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
