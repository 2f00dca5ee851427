"""Detect's fused Triton reductions alone: GB/s of each against a plain read, and the same values as the torch form.

    python scripts/bench_reduce.py                                   # one GPU: the 8B shapes of bench_scale's detect
    python scripts/bench_reduce.py --tiles 16,64,128,4 32,128,128,8  # tile configs (BLOCK_T,TOKENS,BLOCK_C,NUM_WARPS)
    TRITON_INTERPRET=1 SYSQ_REDUCE=triton python scripts/bench_reduce.py --device cpu --windows 2 --seqlen 40 \
        --hidden 96 --intermediate 200 --reps 1                      # the CPU, in Triton's interpreter: a smoke test

Rows (bf16 on a GPU, float32 on the CPU):
  read          x.amax(): one read of the tensor, the bandwidth a reduction can reach
  sites fused   capture.reduce_fused of the five sites of one decoder layer (attn_in, o_in, mlp_in, down_in: the
                intermediate width, resid), kernel and the partials' combine; per tile config
  sites torch   capture.reduce_stacked of the same sites (the torch form: a stack, |x|, a dozen passes)
  weights       detect.weight._on_device of one layer's gate and up weights [intermediate, hidden], fused / torch
  attention     the attention mass each key receives from [B, H, T, T] probabilities: column_stats / torch's
                float64 sum
Each row: milliseconds (median of --reps, CUDA events), GB/s of the input read once, and whether its values equal
the torch form's (maxima, first indices, counts exactly; float64 sums equal once rounded to float32). Table to
stdout, JSON to $OUT/bench_reduce.json (default out/).
"""
import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from sysq import capture  # noqa: E402
from sysq.detect.thresholds import Thresholds  # noqa: E402


def timed(fn, reps: int, device) -> float:
    """Median milliseconds of fn() over reps (after one warm-up call)."""
    fn()
    out = []
    for _ in range(reps):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            out.append(a.elapsed_time(b))
        else:
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1e3)
    return statistics.median(out)


def same(ref, got) -> bool:
    """Equal: exactly, or for float64 sums once rounded to float32."""
    for r, g in zip(ref, got):
        if r.dtype == torch.float64:
            r, g = r.float(), g.float()
        ok = torch.isfinite(r) if r.is_floating_point() else torch.ones_like(r, dtype=torch.bool)
        if r.shape != g.shape or not torch.equal(r[ok], g[ok]):
            return False
    return True


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--windows", type=int, default=8, help="windows per batch (bench_scale's detect: 8)")
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--intermediate", type=int, default=14336)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--tiles", nargs="*", default=[], help="tile configs BLOCK_T,TOKENS,BLOCK_C,NUM_WARPS to time "
                   "besides the default")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", default=os.environ.get("OUT", "out"))
    args = p.parse_args()
    device = torch.device(args.device)
    if not capture.fused(device):
        p.error(f"the fused pass does not run on {device} here (CUDA with Triton; on the CPU: TRITON_INTERPRET=1 "
                "SYSQ_REDUCE=triton)")
    from sysq import _reduce_triton as R
    from sysq.detect.weight import _on_device

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    B, T, C, I = args.windows, args.seqlen, args.hidden, args.intermediate
    g = torch.Generator(device=device).manual_seed(0)

    def randn(*shape):
        x = torch.randn(*shape, generator=g, device=device, dtype=torch.float32)
        x[:, 0, 3] = 2000.0                       # a massive value at the first token
        return x.to(dtype)
    sites = {C: [randn(B, T, C) for _ in range(4)], I: [randn(B, T, I)]}
    th = Thresholds()
    below = torch.tensor([-math.inf], device=device)
    w = [torch.randn(I, C, generator=g, device=device, dtype=torch.float32).mul_(0.02).to(dtype) for _ in range(2)]
    probs = torch.randn(B, args.heads, T, T, generator=g, device=device, dtype=torch.float32)
    probs = probs.masked_fill_(torch.ones(T, T, dtype=torch.bool, device=device).triu(1), -math.inf).softmax(-1)
    probs = probs.to(dtype)

    def nbytes(ts):
        return sum(t.numel() * t.element_size() for t in ts)
    site_bytes = nbytes([x for xs in sites.values() for x in xs])

    def reduce_all(fn):
        out = []
        for xs in sites.values():
            floors = torch.full((len(xs), 1, 1, 1), 6.0, device=device)
            fields, rest = fn(xs, floors)
            out += [*fields, *rest[:3]]
        return out
    fused_sites = lambda: reduce_all(lambda xs, f: capture.reduce_fused(xs, f, below, th))      # noqa: E731
    torch_sites = lambda: reduce_all(lambda xs, f: capture.reduce_stacked(torch.stack(xs), f, below, th))  # noqa: E731
    ref_sites = torch_sites()
    rows = []

    def row(name, ms, nb, ok=None, note=""):
        r = {"row": name, "ms": ms, "gb_s": nb / ms / 1e6, "same": ok, "note": note}
        rows.append(r)
        print(f"| {name} | {ms:.3f} | {r['gb_s']:.0f} | {'' if ok is None else ok} | {note} |", flush=True)

    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), {dtype}, "
          f"B={B} T={T} C={C} I={I} H={args.heads}, torch {torch.__version__}")
    print("| row | ms | GB/s | same as torch | note |\n|---|---|---|---|---|")
    row("read (x.amax())", timed(lambda: [x.amax() for xs in sites.values() for x in xs], args.reps, device),
        site_bytes)
    default = (R.BLOCK_T, R.TOKENS, R.BLOCK_C, R.NUM_WARPS)
    for tile in [default] + [tuple(int(v) for v in t.split(",")) for t in args.tiles]:
        R.BLOCK_T, R.TOKENS, R.BLOCK_C, R.NUM_WARPS = tile
        try:
            ok = same(ref_sites, fused_sites())
            row("sites fused", timed(fused_sites, args.reps, device), site_bytes, ok,
                "tile %s%s" % (",".join(map(str, tile)), " (default)" if tile == default else ""))
        except Exception as e:         # a tile the compiler refuses (registers, shared memory): said, not fatal
            rows.append({"row": "sites fused", "tile": tile, "error": repr(e)[:200]})
            print(f"| sites fused | - | - | - | tile {tile}: {repr(e)[:120]} |", flush=True)
    R.BLOCK_T, R.TOKENS, R.BLOCK_C, R.NUM_WARPS = default
    row("sites torch", timed(torch_sites, args.reps, device), site_bytes, True, "reduce_stacked")

    os.environ["SYSQ_REDUCE"] = "torch"
    ref_w = _on_device(w)
    t_torch = timed(lambda: _on_device(w), args.reps, device)
    os.environ.pop("SYSQ_REDUCE")
    if device.type == "cpu":
        os.environ["SYSQ_REDUCE"] = "triton"
    row("weights fused", timed(lambda: _on_device(w), args.reps, device), nbytes(w), same(ref_w, _on_device(w)))
    row("weights torch", t_torch, nbytes(w), True, "stack, |W|, max, float64 sum")

    flat = probs.flatten(0, 1)
    ref_a = [probs.sum(2, dtype=torch.float64).view(-1, T)]
    row("attention fused", timed(lambda: capture.column_stats([flat]), args.reps, device), nbytes([probs]),
        same(ref_a, [capture.column_stats([flat])[2][0]]))
    row("attention torch", timed(lambda: probs.sum(2, dtype=torch.float64), args.reps, device), nbytes([probs]),
        True, "float64 sum (a float64 copy first)")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_reduce.json").write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2) + "\n")
    print(f"wrote {out / 'bench_reduce.json'}")
    return 0 if all(r.get("same") is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
