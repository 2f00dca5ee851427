"""Batch-1 weight-only matrix-vector products at Llama-3-8B shapes: us per call and GB/s of weights streamed.

    python scripts/bench_gemv.py                         # CUDA: the 8B shapes, M=1, every kernel, CUDA graphs
    python scripts/bench_gemv.py --device cpu            # tiny shapes, Triton's interpreter (checks it runs)

Rows per shape (K -> N): bf16 F.linear (cuBLAS), tinygemm int4 (torch._weight_int4pack_mm, group 128),
sysq's Triton int4 GEMVs (fma: one LOP3 + one FMA per code; nibble: the first one; tc: the multiply on tensor
cores, on pack_int4_tc's layout, and on CUDA its inline-PTX unpacking at one config), autotuned,
torch._weight_int8pack_mm, the inductor int8 path (torch.compile of F.linear(x, q.to(bf16)) * s with
coordinate descent tuning, as the real module runs it today without the GEMV), and sysq's Triton GEMVs
(sysq.quant.gemv: the custom op alone; in a model its split-K sum and cast fuse into the next kernel; without
a split, the 'scaled' op applies the scale and cast in the kernel, as Int8WOLinear runs it).
Each is timed on the GPU inside a CUDA graph of many calls that cycle through enough copies of the weight
(>= 256 MiB in all) that none is served from the 50 MiB L2; us/call = graph replay time / calls.
GB/s = bytes of weights (+ scales) per call / time. Every row is checked against the bf16 product of its
own dequantized weight (max relative error printed). Writes OUT/bench_gemv.json (OUT: --out, $OUT, out/).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

SHAPES_8B = [(4096, 4096), (4096, 1024), (4096, 14336), (14336, 4096), (4096, 128256),   # (K, N)
             (4096, 6144), (4096, 28672)]   # fused q/k/v and gate/up (sysq.quant.fuse)
SHAPES_TINY = [(256, 128), (512, 96)]


def graph_us(fn, copies, calls: int, reps: int = 10) -> float:
    """us per call of fn on the GPU: one CUDA graph of `calls` calls cycling through the weight copies, replayed
    `reps` times (launch gaps as in a compiled decode step, no L2 reuse across calls)."""
    import torch
    for c in copies[:2]:
        fn(c)        # autotune / compile outside the capture
    torch.cuda.synchronize()
    calls = max(calls, len(copies))
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn(copies[0])
        with torch.cuda.graph(g, stream=s):
            for i in range(calls):
                fn(copies[i % len(copies)])
    torch.cuda.current_stream().wait_stream(s)
    for _ in range(3):
        g.replay()
    torch.cuda.synchronize()
    t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0.record()
    for _ in range(reps):
        g.replay()
    t1.record()
    torch.cuda.synchronize()
    return t0.elapsed_time(t1) * 1e3 / (reps * calls)


def resolve_device(args) -> bool:
    """args.device made definite (cuda when present, else cpu); off CUDA, Triton's interpreter is turned on (it must
    be before triton is first imported). True on CUDA."""
    import torch
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device != "cuda":
        os.environ["TRITON_INTERPRET"] = "1"
    return args.device == "cuda"


def print_settings(info: dict) -> None:
    """The run's settings line, with the Triton version (None where it is not installed)."""
    try:
        import triton
        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    print("settings:", json.dumps(info), flush=True)


def timer(cuda: bool, calls: int):
    """us per call: CUDA graph of `calls` calls over the weight copies (CPU: one eager call, wall time)."""
    def timeit(fn, copies):
        if not cuda:
            t = time.perf_counter()
            fn(copies[0])
            return (time.perf_counter() - t) * 1e6
        return graph_us(fn, copies, calls)
    return timeit


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default=None, help="cuda (default when present) or cpu (interpreter, tiny shapes)")
    p.add_argument("--m", type=int, default=1, help="rows of x (decode batch)")
    p.add_argument("--group", type=int, default=128, help="int4 group size")
    p.add_argument("--calls", type=int, default=40, help="calls per CUDA graph (at least the weight copies)")
    p.add_argument("--bust-mib", type=int, default=256, help="weight copies per row total at least this (L2)")
    p.add_argument("--no-inductor", action="store_true", help="skip the torch.compile int8 row (compile time)")
    p.add_argument("--time-budget", type=float, default=100.0, help="seconds; compiled rows not started by then "
                   "are skipped")
    p.add_argument("--only", default="", help="comma list of substrings: time only the kernels whose names hold one "
                   "(e.g. 'bf16,tinygemm,mma')")
    p.add_argument("--mma-sweep", action="store_true", help="time the CUDA int4 kernel at every launch config")
    p.add_argument("--shapes", default="", help="comma list of KxN (default: the 8B shapes on CUDA)")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    import torch
    resolve_device(args)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sysq.io import atomic_write_text
    from sysq.quant import gemv
    from sysq.quant.kernels import _int4_mm, _pack_for, inner_k_tiles
    import torch.nn.functional as F

    dev, cuda = args.device, args.device == "cuda"
    shapes = SHAPES_8B if cuda else SHAPES_TINY
    if args.shapes:
        shapes = [tuple(int(v) for v in kn.split("x")) for kn in args.shapes.split(",")]
    torch.manual_seed(0)
    start, rows = time.perf_counter(), []
    info = dict(device=torch.cuda.get_device_name() if cuda else "cpu (Triton interpreter)", torch=torch.__version__,
                m=args.m, group=args.group, gemv=gemv.available(dev))
    print_settings(info)
    timeit = timer(cuda, args.calls)

    for k, n in shapes:
        x = torch.randn(args.m, k, device=dev).to(torch.bfloat16)
        w = (torch.randn(n, k, device=dev) * 0.02).to(torch.bfloat16)
        g = args.group
        # the same weights in each format: int4 codes per group of g (scale + float zero), int8 per channel
        wg = w.float().reshape(n, k // g, g)
        lo, hi = wg.amin(-1), wg.amax(-1)
        s4 = ((hi - lo) / 15).clamp_min(1e-8)
        u = torch.round((wg - lo.unsqueeze(-1)) / s4.unsqueeze(-1)).clamp(0, 15).reshape(n, k).to(torch.int32)
        sz = torch.stack([s4.t(), (lo + 8 * s4).t()], dim=-1).to(torch.bfloat16).contiguous()   # w = (u-8)s + z
        s8 = (w.float().abs().amax(1) / 127).clamp_min(1e-8)
        q8 = torch.round(w.float() / s8[:, None]).clamp(-127, 127).to(torch.int8)
        w4 = gemv.dequantize_int4(gemv.pack_nibbles(u - 8), sz, g)
        w8 = q8.float() * s8[:, None]

        def variants():
            yield "bf16 F.linear", w, w.float(), lambda c: F.linear(x, c), w.numel() * 2
            if True:   # tinygemm exists on CUDA and x86/ARM CPUs
                try:
                    packed = _pack_for(dev, u, inner_k_tiles(k))
                    yield ("tinygemm int4", packed, w4, lambda c: _int4_mm(x, c, g, sz),
                           n * k // 2 + sz.numel() * 2)
                except Exception as e:
                    print(f"  tinygemm int4: {type(e).__name__}: {str(e)[:120]}")
            s8b = s8.to(torch.bfloat16)
            yield ("torch._weight_int8pack_mm", q8, w8, lambda c: torch._weight_int8pack_mm(x, c, s8b),
                   n * k + n * 2)
            if cuda and not args.no_inductor:
                if time.perf_counter() - start < args.time_budget:
                    import torch._inductor.config as ic
                    s8f = s8.float()

                    def deq(xx, c):
                        return F.linear(xx, c.to(xx.dtype)) * s8f.to(xx.dtype)
                    with ic.patch(coordinate_descent_tuning=True):
                        comp = torch.compile(deq, dynamic=False, mode="max-autotune-no-cudagraphs")
                        comp(x, q8)
                    yield "inductor int8 (compiled)", q8, w8, lambda c: comp(x, c), n * k + n * 4
                else:
                    print("  inductor int8: skipped (time budget)")
            if gemv.available(dev):
                qb = gemv.pack_nibbles(u - 8)
                for kern4 in gemv.INT4_KERNELS:   # autotuned; the fma kernel's tiles span ~16 groups of K
                    sp4 = gemv.split_k(args.m, n, k // ((16 if kern4 == "fma" else 2) * g), 8 if kern4 == "fma" else 16)
                    yield (f"sysq Triton int4 {kern4} (split {sp4})", qb, w4,
                           lambda c, kern4=kern4, sp4=sp4: gemv._launch("int4", x, c, sz, g, sp4, {"KERNEL": kern4}),
                           n * k // 2 + sz.numel() * 2)
                if g % gemv.TC_BLOCK == 0:   # the tensor-core kernel, on its own layout of the same codes
                    qt = gemv.pack_int4_tc(u - 8)
                    spt = gemv.split_k(1, n, k // (2 * g), 128)   # as gemv.int4_gemv splits it
                    yield (f"sysq Triton int4 tc (split {spt})", qt, w4,
                           lambda c, spt=spt: gemv._launch("int4", x, c, sz, g, spt), n * k // 2 + sz.numel() * 2)
                    if cuda:   # its inline-PTX unpacking (the interpreter cannot run it), one wgmma config
                        cfg = dict(KERNEL="tc", BLOCK_N=128, GPI=1, ASM=True, num_warps=4, num_stages=3)
                        yield (f"sysq Triton int4 tc asm (split {spt})", qt, w4,
                               lambda c, spt=spt: gemv._launch("int4", x, c, sz, g, spt, cfg),
                               n * k // 2 + sz.numel() * 2)
            if cuda and g in gemv.MMA_GROUPS and n % 16 == 0 and args.m <= 8:
                from sysq.quant import _gemv_cuda
                if _gemv_cuda.builds():   # the CUDA kernel on its own layout of the same codes (x's dtype out)
                    qm = gemv.pack_int4_mma(u - 8)
                    ext, auto = _gemv_cuda.extension(), gemv.mma_config(k, n)
                    for ci in (range(len(gemv.MMA_CONFIGS)) if args.mma_sweep else [auto]):
                        wc = "w%dc%d" % gemv.MMA_CONFIGS[ci] + (" (default)" if ci == auto else "")
                        yield (f"sysq CUDA int4 mma {wc}", qm, w4,
                               lambda c, ci=ci: ext.int4_mma_gemv(x, c, sz, g, ci), n * k // 2 + sz.numel() * 2)
            if gemv.available(dev):
                sp8 = gemv.split_k(args.m, n, k // 512)
                yield (f"sysq Triton int8 (split {sp8})", q8, w8,
                       lambda c: torch.ops.sysq.int8_gemv(x, c, sp8) * s8, n * k)
                if sp8 == 1:   # what the module runs then: scale and cast in the kernel, x's dtype out
                    yield ("sysq Triton int8 scaled (in-kernel epilogue)", q8, w8,
                           lambda c: torch.ops.sysq.int8_gemv_scaled(x, c, s8), n * k + n * 4)

        for name, weight, wref, fn, nbytes in variants():
            if args.only and not any(o in name for o in args.only.split(",")):
                continue
            try:
                copies = [weight] + [weight.clone() for _ in range(max(0, math.ceil(args.bust_mib * 2**20 / nbytes) - 1))] \
                    if cuda else [weight]
                y = fn(copies[0])
                y = y.sum(0) if y.dim() == 3 else y
                ref = x.float() @ wref.t()
                err = float((y.float() - ref).abs().max() / ref.abs().max())
                us = timeit(fn, copies)
                row = dict(K=k, N=n, kernel=name, us=us, gbps=nbytes / us / 1e3, mib=nbytes / 2**20, max_rel_err=err)
                del copies
            except Exception as e:
                row = dict(K=k, N=n, kernel=name, error=f"{type(e).__name__}: {str(e)[:160]}")
            rows.append(row)
            print(f"{k:6d} -> {n:6d}  {name:34s} " + (f"{row['us']:9.1f} us  {row['gbps']:7.0f} GB/s  "
                  f"err {row['max_rel_err']:.1e}" if "us" in row else row["error"]), flush=True)
            if cuda:
                torch.cuda.empty_cache()

    if args.mma_sweep:      # the fastest mma config per shape, as a table SYSQ_GEMV_CONFIGS takes (int8 kept)
        table = {kind: {f"{kk}x{nn}": c for (kk, nn), c in shapes_.items()}
                 for kind, shapes_ in gemv.TUNED.get(info["device"], {}).items()}
        for k, n in shapes:
            mm = [r for r in rows if (r["K"], r["N"]) == (k, n) and "mma" in r["kernel"] and "us" in r]
            if mm:
                best = min(mm, key=lambda r: r["us"])
                ci = [("w%dc%d" % c) for c in gemv.MMA_CONFIGS].index(best["kernel"].split()[4])
                table.setdefault("int4", {})[f"{k}x{n}"] = {"KERNEL": "mma", "CONFIG": ci}
        out_ = Path(args.out or os.environ.get("OUT") or "out")
        out_.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_ / "gemv_configs.json", json.dumps(table, indent=1))
        print("mma configs:", json.dumps(table.get("int4", {})))
    lines = ["| K -> N | kernel | us/call | GB/s | MiB | max rel err |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['K']} -> {r['N']} | {r['kernel']} | " + (
            f"{r['us']:.1f} | {r['gbps']:.0f} | {r['mib']:.1f} | {r['max_rel_err']:.1e} |" if "us" in r
            else f"{r['error']} | | | |"))
    table = "\n".join(lines)
    print("\n" + table)
    if cuda:
        info["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    info["wall_s"] = time.perf_counter() - start
    out = Path(args.out or os.environ.get("OUT") or "out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "bench_gemv.json", json.dumps(dict(settings=info, rows=rows), indent=1))
    atomic_write_text(out / "bench_gemv.md", f"# bench_gemv\n\nSettings: {json.dumps(info)}\n\n{table}\n")
    print(f"wrote {out / 'bench_gemv.json'} ({info['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
