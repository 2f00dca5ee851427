"""Cost of `sysq.detect` against plain forward passes over the same windows, in one process and one run.

    flock /tmp/sysq-cpu.lock python scripts/bench_detect.py --n 32 --seqlen 512          # time ratio
    flock /tmp/sysq-cpu.lock python scripts/bench_detect.py --memory 8 64 --seqlen 512   # peak RSS per n

Time: plain (the whole model, logits included, as a user runs it), then detect (full report: eager attention
on the first 8 windows, lifecycle, weights; plots not drawn; detect skips the lm_head it does not need),
then plain again; ratio = detect / mean(plain).
Memory: each n runs detect alone in a fresh subprocess; peak RSS (ru_maxrss) of that process, and the
peak RSS of a subprocess that only loads the model and runs one plain batch, for reference.
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import sysq  # noqa: E402
from sysq.detect import detect  # noqa: E402


def _plain(model, w, batch_size) -> float:
    t = time.perf_counter()
    with torch.no_grad():
        for b in w.batches(batch_size):
            model(b)
    return time.perf_counter() - t


def time_ratio(args) -> None:
    model, tok = sysq.load(args.model)
    w = sysq.windows(args.data, tok, n=args.n, seqlen=args.seqlen, seed=args.seed)
    with torch.no_grad():
        model(w.ids[:1, :64])                                   # warm-up
    p1 = _plain(model, w, args.batch_size)
    t = time.perf_counter()
    detect(model, w, tok, quiet=True, batch_size=args.batch_size, snapshot=True)
    d = time.perf_counter() - t
    d_noattn = None
    if args.no_attention_too:
        t = time.perf_counter()
        detect(model, w, tok, quiet=True, batch_size=args.batch_size, attention=False, snapshot=False)
        d_noattn = time.perf_counter() - t
    p2 = _plain(model, w, args.batch_size)
    plain = (p1 + p2) / 2
    print(f"model={args.model} data={args.data} windows={len(w)} seqlen={args.seqlen} batch={args.batch_size} "
          f"threads={torch.get_num_threads()}")
    print(f"plain forward      : {p1:.1f} s, {p2:.1f} s (mean {plain:.1f} s)")
    print(f"detect (full)      : {d:.1f} s   ratio {d / plain:.2f}x")
    if d_noattn is not None:
        print(f"detect (no attn)   : {d_noattn:.1f} s   ratio {d_noattn / plain:.2f}x")


def _child(args) -> None:
    model, tok = sysq.load(args.model)
    w = sysq.windows(args.data, tok, n=args.child, seqlen=args.seqlen, seed=args.seed)
    t = time.perf_counter()
    if args.plain_only:
        with torch.no_grad():
            model(w.ids[: args.batch_size])
    else:
        detect(model, w, tok, quiet=True, batch_size=args.batch_size)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB -> MiB on Linux
    print(json.dumps({"n": args.child, "plain_only": args.plain_only, "peak_rss_mib": rss,
                      "seconds": time.perf_counter() - t}))


def memory(args) -> None:
    rows = []
    for n, plain_only in [(args.memory[0], True)] + [(n, False) for n in args.memory]:
        cmd = [sys.executable, __file__, "--child", str(n), "--seqlen", str(args.seqlen), "--model", args.model,
               "--data", args.data, "--seed", str(args.seed), "--batch-size", str(args.batch_size)]
        out = subprocess.run(cmd + (["--plain-only"] if plain_only else []), capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"model={args.model} seqlen={args.seqlen} batch={args.batch_size}")
    for r in rows:
        what = "load + one plain batch" if r["plain_only"] else f"detect n={r['n']}"
        print(f"{what:24s}: peak RSS {r['peak_rss_mib']:.0f} MiB ({r['seconds']:.1f} s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", default="wikitext2-valid")
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--no-attention-too", action="store_true", help="also time detect without attention statistics")
    p.add_argument("--memory", type=int, nargs="+", help="window counts to measure peak RSS for, e.g. 8 64")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--plain-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args)
    elif args.memory:
        memory(args)
    else:
        time_ratio(args)


if __name__ == "__main__":
    main()
