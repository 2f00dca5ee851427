"""Detect's fused Triton reductions alone: GB/s of each kernel design against a plain read, and the same values as
the torch form.

    python scripts/bench_reduce.py                          # one GPU: the 8B shapes of bench_scale's detect, every design
    python scripts/bench_reduce.py --tiles fused:16,64,128,8 split:8,64,512,4,1,1/8,256,4 wide:8,64,1024,4,0
    TRITON_INTERPRET=1 SYSQ_REDUCE=triton python scripts/bench_reduce.py --device cpu --windows 2 --seqlen 40 \
        --hidden 96 --intermediate 200 --reps 1 --tiles split:8,16,32,4,1/8,32,4 wide:8,16,32,4 # CPU smoke test

Kernel designs (sysq/_reduce_triton.py, SYSQ_REDUCE_KERNEL): fused (the default), split, wide; each timed with its
default tile, then the --tiles given as DESIGN:BLOCK_T,TOKENS,BLOCK_C,NUM_WARPS[,ROWWISE[,PREFETCH]][/TOKEN_BLOCK_T,
TOKEN_BLOCK_C,TOKEN_WARPS] (the part after / is split's token kernel; no DESIGN: means fused). The JSON's rows
say each config (kernel, tile, token_tile: what SYSQ_REDUCE_KERNEL, SYSQ_REDUCE_TILE, SYSQ_REDUCE_TOKEN_TILE take).

Rows (bf16 on a GPU, float32 on the CPU):
  read             x.amax(): one read of the tensor, the bandwidth a reduction can reach
  sites kernels    the design's kernel launches alone (capture._fused_partials with the token statistics) over the
                   five sites of one decoder layer (attn_in, o_in, mlp_in, down_in: the intermediate width, resid)
  sites fused      capture.reduce_fused of the same sites: the median estimate, the kernels, the partials' combine
  sites torch      capture.reduce_stacked of the same sites (the torch form: a stack, |x|, a dozen passes)
  weights          detect.weight._on_device of one layer's gate and up weights [intermediate, hidden], fused / torch
  attention        the attention mass each key receives from [B, H, T, T] probabilities: column_stats / torch's
                   float64 sum
Each row: milliseconds (median of --reps, CUDA events), GB/s of the input read once (split reads the sites twice:
still counted once), and whether its values equal the torch form's (maxima, first indices, counts exactly; float64
sums equal once rounded to float32). Table to stdout, JSON to $OUT/bench_reduce.json (default out/).
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
    p.add_argument("--kernels", nargs="*", default=None, help="kernel designs to time (default: all)")
    p.add_argument("--tiles", nargs="*", default=[], help="[DESIGN:]BLOCK_T,TOKENS,BLOCK_C,NUM_WARPS[,ROWWISE"
                   "[,PREFETCH]][/TOKEN_BLOCK_T,TOKEN_BLOCK_C,TOKEN_WARPS] to time besides each design's default")
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

    def row(name, ms, nb, ok=None, note="", **config):
        r = {"row": name, "ms": ms, "gb_s": nb / ms / 1e6, "same": ok, "note": note, **config}
        rows.append(r)
        print(f"| {name} | {ms:.3f} | {r['gb_s']:.0f} | {'' if ok is None else ok} | {note} |", flush=True)

    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), {dtype}, "
          f"B={B} T={T} C={C} I={I} H={args.heads}, torch {torch.__version__}")
    print("| row | ms | GB/s | same as torch | note |\n|---|---|---|---|---|")
    row("read (x.amax())", timed(lambda: [x.amax() for xs in sites.values() for x in xs], args.reps, device),
        site_bytes)
    os.environ["SYSQ_REDUCE"] = "torch"
    ref_w = _on_device(w)
    t_torch = timed(lambda: _on_device(w), args.reps, device)
    os.environ.pop("SYSQ_REDUCE")
    if device.type == "cpu":
        os.environ["SYSQ_REDUCE"] = "triton"
    flat = probs.flatten(0, 1)
    ref_a = [probs.sum(2, dtype=torch.float64).view(-1, T)]
    ints = lambda v: tuple(int(x) for x in v.split(","))      # noqa: E731
    configs = [(k, None, None) for k in args.kernels or R.VARIANTS]
    for t in args.tiles:
        name, _, t = t.rpartition(":")
        tile, _, tok = t.partition("/")
        configs.append((name or "fused", ints(tile), ints(tok) if tok else None))
    thr = {c: torch.full((len(xs), B), 1e4, device=device) for c, xs in sites.items()}
    kernels_only = lambda: [capture._fused_partials(xs, thr[c], token_stats=True) for c, xs in sites.items()]  # noqa
    start = (R.VARIANT, (R.BLOCK_T, R.TOKENS, R.BLOCK_C, R.NUM_WARPS, R.ROWWISE, R.PREFETCH), R.TOKEN_TILE)
    for name, tile, tok in configs:
        try:
            R.use(name, tile, tok)
            tile_now = (R.BLOCK_T, R.TOKENS, R.BLOCK_C, R.NUM_WARPS, R.ROWWISE, R.PREFETCH)
            cfg = {"kernel": name, "tile": ",".join(map(str, tile_now)), "token_tile": ",".join(map(str, R.TOKEN_TILE))}
            note = f"{name} tile {cfg['tile']}" + (f"/{cfg['token_tile']}" if name == "split" else "")
            ok = same(ref_sites, fused_sites())
            row("sites kernels", timed(kernels_only, args.reps, device), site_bytes, None, note, **cfg)
            row("sites fused", timed(fused_sites, args.reps, device), site_bytes, ok, note, **cfg)
            if tile is None and tok is None:        # the weights and the attention mass: each design's default tile
                row("weights fused", timed(lambda: _on_device(w), args.reps, device), nbytes(w),
                    same(ref_w, _on_device(w)), note)
                row("attention fused", timed(lambda: capture.column_stats([flat]), args.reps, device),
                    nbytes([probs]), same(ref_a, [capture.column_stats([flat])[2][0]]), note)
        except Exception as e:         # a tile the compiler refuses (registers, shared memory): said, not fatal
            rows.append({"row": "sites fused", "kernel": name, "tile": tile, "error": repr(e)[:300]})
            print(f"| sites fused | - | - | - | {name} {tile}: {repr(e)[:160]} |", flush=True)
    R.use(*start)
    row("sites torch", timed(torch_sites, args.reps, device), site_bytes, True, "reduce_stacked")
    row("weights torch", t_torch, nbytes(w), True, "stack, |W|, max, float64 sum")
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
