"""detect with Python's cyclic garbage collector paused (what sysq.detect does) and running (as before), side by side:
wall time of each run and the collector's pauses inside it. A run here is what a user's process does: runs follow
each other with no gc.collect() between them, so now and then one of detect's own collections is a full one over
every object the process holds (torch, transformers, the model).

    python scripts/bench_detect_gc.py                            # tiny 32-layer llama, the GPU's hook forms
    python scripts/bench_detect_gc.py --device cuda --reps 10
    python scripts/bench_detect_gc.py --device cuda --config 8b --windows 16 --seqlen 512 --collect   # bench_scale's
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

import sysq  # noqa: E402
from bench_scale import build, forward, windows  # noqa: E402
from sysq.capture import Pending, Recorder  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--reps", type=int, default=8, help="runs of each form, alternating")
    p.add_argument("--device", default="cpu")
    p.add_argument("--config", default=None, help="a scripts/bench_scale.py config (8b: random bf16 weights, planted "
                                                  "outlier) instead of the tiny llama of --layers")
    p.add_argument("--collect", action="store_true", help="a full collection before each run (bench_scale does)")
    p.add_argument("--forms", default="paused,running", help="which detects run, alternating: paused, running")
    p.add_argument("--forward", action="store_true", help="a plain forward of the windows before each run (as "
                                                          "bench_scale's alternating forward and detect)")
    p.add_argument("--cprofile", type=int, default=0, metavar="N",
                   help="then one more paused run under cProfile: the N functions with the most own time (the host's share)")
    args = p.parse_args()
    torch.manual_seed(0)
    if args.config:
        model = build(args.config, None, args.device, torch.bfloat16 if args.device != "cpu" else torch.float32)
        ids = windows(model.config, args.windows, args.seqlen)
    else:
        cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=args.layers,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=args.seqlen,
                          bos_token_id=1)
        model = LlamaForCausalLM(cfg).eval().to(args.device)
        ids = torch.randint(3, 512, (args.windows, args.seqlen), generator=torch.Generator().manual_seed(0))
        ids[:, 0] = 1
    if args.device == "cpu":        # the accelerator's whole-tensor hook forms, as on a GPU
        Recorder.dense, Pending.defer = True, True
    pauses, start = [], [0.0]

    def watch(phase, info):
        if phase == "start":
            start[0] = time.perf_counter()
        else:
            pauses.append((info["generation"], time.perf_counter() - start[0]))
    gc.callbacks.append(watch)
    every = {"paused": ("paused (sysq.detect)", sysq.detect), "running": ("running (as before)", sysq.detect.__wrapped__)}
    forms = dict(every[f] for f in args.forms.split(","))
    cuda = args.device != "cpu"

    def allocs() -> tuple:            # cudaMalloc and pinned host allocations so far (the caching allocators' misses)
        if not cuda:
            return 0, 0
        return (torch.cuda.memory_stats().get("num_device_alloc", 0),
                torch.cuda.host_memory_stats().get("num_host_alloc", 0))
    for fn in forms.values():
        fn(model, ids[:2], quiet=True, batch_size=args.batch_size)            # warm-up
    rows = {name: [] for name in forms}
    for _ in range(args.reps):
        for name, fn in forms.items():
            if args.forward:
                with torch.no_grad():
                    forward(model, ids, args.batch_size)
            if args.collect:
                gc.collect()
            pauses.clear()
            if cuda:
                torch.cuda.synchronize()
            a0 = allocs()
            c0 = time.thread_time()
            t0 = time.perf_counter()
            fn(model, ids, quiet=True, batch_size=args.batch_size)
            if cuda:
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
            rows[name].append((wall, len(pauses), sum(s for _, s in pauses),
                               sum(g == 2 for g, _ in pauses), [b - a for a, b in zip(a0, allocs())], cpu))
    gc.callbacks.remove(watch)
    print(f"{args.config or f'tiny llama, {args.layers} layers'}, {args.windows} x {args.seqlen} tokens, batch {args.batch_size}, {args.device}, "
          f"{len(gc.get_objects()):,} objects tracked by the collector, python {sys.version.split()[0]}"
          + (", a full collection before each run" if args.collect else "")
          + (", a plain forward before each run" if args.forward else ""))
    print("| collector | median ms | max ms | runs (ms) | collections per run | their ms per run | full ones | "
          "cudaMalloc / pinned allocations per run | the Python thread's CPU ms per run |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        ms = [x[0] * 1e3 for x in r]
        print(f"| {name} | {statistics.median(ms):.1f} | {max(ms):.1f} | {', '.join(f'{x:.0f}' for x in ms)} | "
              f"{statistics.median(x[1] for x in r):g} | {', '.join(f'{x[2] * 1e3:.1f}' for x in r)} | "
              f"{sum(x[3] for x in r)} | {', '.join(f'{x[4][0]}/{x[4][1]}' for x in r)} | "
              f"{', '.join(f'{x[5] * 1e3:.0f}' for x in r)} |")
    if args.cprofile:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        prof.enable()
        sysq.detect(model, ids, quiet=True, batch_size=args.batch_size)
        if cuda:
            torch.cuda.synchronize()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.cprofile)


if __name__ == "__main__":
    main()
