"""Speed of the real INT8 linear (torch._int_mm) against the float linear, as ratios from one run.

For each shape (in -> out) and token count M it times, interleaved, median of --reps runs:
  float      F.linear(x, W) in float32
  int8       Int8Linear forward: per-token dynamic int8 quantization of x, _int_mm, rescale (end to end)
  int_mm     torch._int_mm on already-quantized operands (the kernel alone)
and prints float/int8 and float/int_mm speed-ups (> 1: the integer path is faster).

    python scripts/bench_linear.py [--tokens 1,16,512] [--reps 20] [--threads N] [--json out.json]
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sysq.quant.kernels import Int8Linear, int_mm  # noqa: E402
from sysq.quant.linear import QuantLinear  # noqa: E402
from sysq.quant.recipes import get_recipe  # noqa: E402

SHAPES = [  # (name, in_features, out_features)
    ("smollm2 q/o 576->576", 576, 576),
    ("smollm2 k/v 576->192", 576, 192),
    ("smollm2 gate/up 576->1536", 576, 1536),
    ("smollm2 down 1536->576", 1536, 576),
    ("4096->4096", 4096, 4096),
    ("4096->11008", 4096, 11008),
    ("11008->4096", 11008, 4096),
]


def _time(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


@torch.no_grad()
def bench(in_f: int, out_f: int, m: int, reps: int) -> dict:
    r = get_recipe("w8a8")
    lin = torch.nn.Linear(in_f, out_f, bias=False)
    ql = QuantLinear(lin, r.weight, r.act, "bench")
    ql.quantize_weight()
    real = Int8Linear(ql)
    w = lin.weight.detach()
    x = torch.randn(m, in_f)
    qx = torch.randint(-127, 128, (m, in_f), dtype=torch.int8)
    fns = {"float": lambda: F.linear(x, w), "int8": lambda: real(x), "int_mm": lambda: int_mm(qx, real.qweight.t())}
    for f in fns.values():   # warm up
        f()
    times = {k: [] for k in fns}
    for _ in range(reps):    # interleave so drifting load hits all three alike
        for k, f in fns.items():
            times[k] += _time(f, 1)
    med = {k: statistics.median(v) for k, v in times.items()}
    return dict(float_ms=med["float"] * 1e3, int8_ms=med["int8"] * 1e3, int_mm_ms=med["int_mm"] * 1e3,
                speedup_int8=med["float"] / med["int8"], speedup_int_mm=med["float"] / med["int_mm"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", default="1,16,512", help="token counts M (default: %(default)s)")
    p.add_argument("--reps", type=int, default=20, help="timed runs per case, median reported (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--shapes", default=None, help="comma-separated indices into the shape list (default: all)")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = SHAPES if not args.shapes else [SHAPES[int(i)] for i in args.shapes.split(",")]
    print(f"torch {torch.__version__}, device cpu, threads {torch.get_num_threads()}, reps {args.reps} (median), "
          f"float32 vs int8 (per-token dynamic activations, per-channel weights)")
    print(f"{'shape':28s} {'M':>5s} {'float ms':>9s} {'int8 ms':>9s} {'_int_mm ms':>10s} {'float/int8':>10s} "
          f"{'float/_int_mm':>13s}")
    rows = []
    for name, i, o in shapes:
        for m in [int(t) for t in args.tokens.split(",")]:
            b = bench(i, o, m, args.reps)
            rows.append(dict(shape=name, in_features=i, out_features=o, tokens=m, **b))
            print(f"{name:28s} {m:5d} {b['float_ms']:9.3f} {b['int8_ms']:9.3f} {b['int_mm_ms']:10.3f} "
                  f"{b['speedup_int8']:10.2f} {b['speedup_int_mm']:13.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
