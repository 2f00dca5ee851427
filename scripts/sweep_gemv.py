"""Launch-config sweep of sysq's Triton int8 / int4 GEMVs at the Llama-3-8B decode shapes (batch 1).

    python scripts/sweep_gemv.py --out $OUT/sweep        # CUDA: 5 shapes x (int8, int4) configs, < 3 min
    python scripts/sweep_gemv.py --device cpu            # tiny shapes, Triton's interpreter (checks it runs)

For each shape K -> N it times, each in a CUDA graph of many calls over enough weight copies that the 50 MiB L2
serves none (scripts/bench_gemv.py's timing): bf16 F.linear (cuBLAS), tinygemm int4 (group 128), the GEMV as
the model runs it today (autotuned config, split_k heuristic) and every config of the grid below (SPLIT_K,
BLOCK_N, BLOCK_K or GPC, num_warps, num_stages; int4: KERNEL fma or nibble, sysq.quant.gemv.INT4_KERNELS).
Where tinygemm beats every int4 candidate at a shape, the table says {"KERNEL": "tinygemm"} for it and the
int4 modules of that shape keep tinygemm (gemv.int4_gemv_for). With SPLIT_K = 1 the int8 candidate is the scaled op (scale
and cast in the kernel, what Int8WOLinear runs); with a split, the kernel alone (in a model the split sum fuses
into the next pointwise kernel). GB/s = weight bytes (+ scales) per call / time. Every candidate is checked
against the product of its dequantized weight (max relative error, refused above 1e-2).

Prints a table per kind and the best config per shape, and writes OUT/sweep_gemv.json (every timing) and
OUT/gemv_configs.json: the best config per shape in the form sysq.quant.gemv.TUNED takes. Run a model with it
(SYSQ_GEMV_CONFIGS=OUT/gemv_configs.json python scripts/bench_generate.py ...) before writing it into TUNED.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SHAPES_8B = [(4096, 6144), (4096, 4096), (4096, 28672), (14336, 4096), (4096, 128256)]   # (K, N): qkv, o, gate/up,
SHAPES_TINY = [(256, 128), (512, 96)]                                                     # down, lm_head
GRID = {   # candidates per kind (the product of the lists, or a list of such dicts); SPLIT_K values above the K
    # chunks are skipped. int4: the fma kernel (GPC >= 8 * num_warps puts every thread along K) and the nibble one
    "int8": dict(SPLIT_K=[1, 2, 4], BLOCK_N=[8, 16, 32], BLOCK_K=[512, 1024], num_warps=[2, 4, 8],
                 num_stages=[2, 3]),
    "int4": [dict(KERNEL=["fma"], SPLIT_K=[1, 2, 4], BLOCK_N=[4, 8, 16], GPC=[16], num_warps=[2], num_stages=[1]),
             dict(KERNEL=["fma"], SPLIT_K=[1, 2], BLOCK_N=[4, 8, 16], GPC=[32], num_warps=[4], num_stages=[1]),
             dict(KERNEL=["fma"], SPLIT_K=[1], BLOCK_N=[8], GPC=[64], num_warps=[8], num_stages=[1]),
             dict(KERNEL=["fma"], SPLIT_K=[1, 2, 4], BLOCK_N=[8, 16], GPC=[8], num_warps=[1], num_stages=[1]),
             dict(KERNEL=["nibble"], SPLIT_K=[1, 2, 4], BLOCK_N=[8, 16], GPC=[2, 4], num_warps=[4], num_stages=[2]),
             # the tensor-core kernel (pack_int4_tc's layout; GPI groups per trip; ASM: its inline-PTX unpacking,
             # ~4.2-5 SASS instructions per weight byte against ~8 for the Triton ops). BLOCK_N >= 64 with 4 / 8
             # warps compiles to wgmma, below to mma.sync (Triton 3.9, sm_90); N = 4096 at BLOCK_N = 256 is only
             # 16 programs, hence splits up to 8. 25 configs
             dict(KERNEL=["tc"], SPLIT_K=[1, 2, 4, 8], BLOCK_N=[256, 128], GPI=[1], num_warps=[4], num_stages=[1, 3],
                  ASM=[True]),
             dict(KERNEL=["tc"], SPLIT_K=[4, 8], BLOCK_N=[64], GPI=[2], num_warps=[4], num_stages=[3], ASM=[True]),
             dict(KERNEL=["tc"], SPLIT_K=[2, 8], BLOCK_N=[128], GPI=[2], num_warps=[4], num_stages=[3], ASM=[True]),
             dict(KERNEL=["tc"], SPLIT_K=[1, 4], BLOCK_N=[256], GPI=[1], num_warps=[8], num_stages=[2], ASM=[True]),
             dict(KERNEL=["tc"], SPLIT_K=[8], BLOCK_N=[32], GPI=[2], num_warps=[2], num_stages=[3], ASM=[True]),
             dict(KERNEL=["tc"], SPLIT_K=[1, 4], BLOCK_N=[128], GPI=[1], num_warps=[4], num_stages=[3], ASM=[False]),
             # after call F12 (best: ASM, BLOCK_N 64-128, 4 warps, 3 stages; 0.79-1.00x tinygemm): deeper pipelines
             # and more groups per trip. 48 configs
             dict(KERNEL=["tc"], SPLIT_K=[1, 2, 4, 8], BLOCK_N=[64, 128], GPI=[1, 2], num_warps=[4], num_stages=[4, 6],
                  ASM=[True]),
             dict(KERNEL=["tc"], SPLIT_K=[1, 2, 4, 8], BLOCK_N=[128], GPI=[2, 4], num_warps=[8], num_stages=[3, 4],
                  ASM=[True])],
}
GRID_TINY = {"int8": dict(SPLIT_K=[1, 2], BLOCK_N=[16], BLOCK_K=[256], num_warps=[4], num_stages=[2]),
             "int4": [dict(KERNEL=["fma"], SPLIT_K=[1, 2], BLOCK_N=[8], GPC=[2], num_warps=[1], num_stages=[1]),
                      dict(KERNEL=["nibble"], SPLIT_K=[1, 2], BLOCK_N=[16], GPC=[2], num_warps=[4], num_stages=[2]),
                      dict(KERNEL=["tc"], SPLIT_K=[1, 2], BLOCK_N=[16], GPI=[1, 2], num_warps=[4], num_stages=[2],
                           ASM=[False])]}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default=None, help="cuda (default when present) or cpu (interpreter, tiny shapes)")
    p.add_argument("--kinds", default="int4,int8", help="each kind gets an equal share of --time-budget")
    p.add_argument("--shapes", default=None, help="KxN,KxN,... (default: the 8B decode shapes)")
    p.add_argument("--group", type=int, default=128, help="int4 group size")
    p.add_argument("--int4-kernels", default=None, help="only these int4 kernels of the grid (e.g. tc; default all: "
                   "fma, nibble, tc)")
    p.add_argument("--no-today", action="store_true", help="skip the 'today (autotuned)' rows (their autotuning)")
    p.add_argument("--calls", type=int, default=40, help="calls per CUDA graph")
    p.add_argument("--bust-mib", type=int, default=256, help="weight copies per candidate total at least this")
    p.add_argument("--time-budget", type=float, default=160.0, help="seconds; candidates not started by then are "
                   "skipped (said so in the output)")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def candidates(grid) -> list[dict]:
    if isinstance(grid, list):
        return [c for part in grid for c in candidates(part)]
    keys = list(grid)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]


def main(argv=None) -> int:
    args = parse(argv)
    from bench_gemv import print_settings, resolve_device, timer
    cuda = resolve_device(args)
    import torch
    import torch.nn.functional as F

    from sysq.io import atomic_write_text
    from sysq.quant import gemv
    from sysq.quant.kernels import _int4_mm, _pack_for, inner_k_tiles

    dev, g = args.device, args.group
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")] if args.shapes else \
        (SHAPES_8B if cuda else SHAPES_TINY)
    kinds = args.kinds.split(",")
    grid = dict(GRID if cuda else GRID_TINY)
    if args.int4_kernels:
        keep = args.int4_kernels.split(",")
        grid["int4"] = [part for part in grid["int4"] if part["KERNEL"][0] in keep]
    start = time.perf_counter()
    info = dict(device=torch.cuda.get_device_name() if cuda else "cpu (Triton interpreter)", torch=torch.__version__,
                group=g, shapes=[f"{k}x{n}" for k, n in shapes], grid={k: grid[k] for k in kinds})
    print_settings(info)
    timeit = timer(cuda, args.calls)

    copies_of = {}

    def measure(fn, weight, ref, nbytes):
        key = (weight.data_ptr(), tuple(weight.shape))     # the copies are made once per weight, kept
        if key not in copies_of:
            copies_of[key] = [weight] + ([weight.clone() for _ in range(
                max(0, math.ceil(args.bust_mib * 2**20 / nbytes) - 1))] if cuda else [])
        copies = copies_of[key]
        y = fn(copies[0])
        y = y.sum(0) if y.dim() == 3 else y
        err = float((y.float() - ref).abs().max() / ref.abs().max())
        if err > 1e-2:
            raise RuntimeError(f"max relative error {err:.1e}")
        us = timeit(fn, copies)
        return dict(us=us, gbps=nbytes / us / 1e3, max_rel_err=err)

    rows = []

    def record(d, kind, name, cfg, fn, weight, ref, nbytes):
        try:
            r = measure(fn, weight, ref, nbytes)
        except Exception as e:
            r = dict(error=f"{type(e).__name__}: {str(e)[:160]}")
        row = dict(K=d["k"], N=d["n"], kind=kind, kernel=name, config=cfg, **r)
        rows.append(row)
        return row

    # the weights of every shape, and the baselines: bf16, tinygemm, each GEMV as the model runs it today
    torch.manual_seed(0)
    data = []
    for k, n in shapes:
        x = torch.randn(1, k, device=dev).to(torch.bfloat16)
        w = (torch.randn(n, k, device=dev) * 0.02).to(torch.bfloat16)
        wg = w.float().reshape(n, k // g, g)
        lo, hi = wg.amin(-1), wg.amax(-1)
        s4 = ((hi - lo) / 15).clamp_min(1e-8)
        u = torch.round((wg - lo.unsqueeze(-1)) / s4.unsqueeze(-1)).clamp(0, 15).reshape(n, k).to(torch.int32)
        sz = torch.stack([s4.t(), (lo + 8 * s4).t()], dim=-1).to(torch.bfloat16).contiguous()
        qb = gemv.pack_nibbles(u - 8)
        s8 = (w.float().abs().amax(1) / 127).clamp_min(1e-8)
        q8 = torch.round(w.float() / s8[:, None]).clamp(-127, 127).to(torch.int8)
        d = dict(k=k, n=n, x=x, sz=sz, s8=s8, base={}, today={},
                 int8=(q8, x.float() @ (q8.float() * s8[:, None]).t(), n * k + n * 4, k // 512),
                 int4=(qb, x.float() @ gemv.dequantize_int4(qb, sz, g).t(), n * k // 2 + sz.numel() * 2,
                       k // (2 * g)))
        if g % gemv.TC_BLOCK == 0:     # the tensor-core kernel's layout of the same codes (same bytes, same product)
            d["int4tc"] = (gemv.pack_int4_tc(u - 8),) + d["int4"][1:]
        d["base"]["bf16"] = record(d, "bf16", "bf16 F.linear", None, lambda c, x=x: F.linear(x, c), w,
                                   x.float() @ w.float().t(), n * k * 2)
        try:
            packed = _pack_for(dev, u, inner_k_tiles(k))
            d["base"]["tinygemm"] = record(d, "int4", "tinygemm int4", None,
                                           lambda c, x=x, sz=sz: _int4_mm(x, c, g, sz), packed, *d["int4"][1:3])
        except Exception as e:
            print(f"  tinygemm int4: {type(e).__name__}: {str(e)[:120]}")
        for kind in kinds:
            if args.no_today:
                d["today"][kind] = {}
                continue
            fn = (lambda c, x=x, s8=s8: gemv.int8_gemv_scaled(x, c, s8)) if kind == "int8" else \
                (lambda c, x=x, sz=sz: gemv.int4_gemv(x, c, sz, g))
            d["today"][kind] = record(d, kind, "today (autotuned)", None, fn, *d[kind][:3])
        data.append(d)
        if cuda:
            copies_of.pop((w.data_ptr(), tuple(w.shape)), None)     # bf16 copies: done with
            torch.cuda.empty_cache()

    def launcher(kind, cfg, d):
        launch = {key: v for key, v in cfg.items() if key != "SPLIT_K"}
        sp, x = cfg["SPLIT_K"], d["x"]
        if kind == "int8" and sp == 1:     # the scaled op: what the module runs without a split
            return lambda c: gemv._launch("int8", x, c, d["s8"], 0, 1, launch)
        if kind == "int8":
            return lambda c: gemv._launch("int8", x, c, None, 0, sp, launch)
        return lambda c: gemv._launch("int4", x, c, d["sz"], g, sp, launch)

    # configs outside, shapes inside (a config compiles once, then runs at every shape), in a shuffled order, so
    # that a time budget cut leaves every shape the same random sample of the grid
    skipped, tried = 0, {(kind, d["k"], d["n"]): [] for kind in kinds for d in data}
    for i, kind in enumerate(kinds):
        cands = candidates(grid[kind])
        random.Random(0).shuffle(cands)
        until = (args.time_budget - (time.perf_counter() - start)) / (len(kinds) - i) + time.perf_counter()
        for cfg in cands:
            for d in data:
                tc = cfg.get("KERNEL") == "tc"
                if tc and "int4tc" not in d:
                    continue
                chunks = d["k"] // (g * cfg["GPC"]) if cfg.get("KERNEL") == "fma" else \
                    d["k"] // (g * cfg["GPI"]) if tc else d[kind][3]
                if cfg["SPLIT_K"] > max(1, chunks):
                    continue
                if time.perf_counter() > until:      # this kind's share of the budget is spent
                    skipped += 1
                    continue
                tried[(kind, d["k"], d["n"])].append(record(d, kind, "candidate", cfg, launcher(kind, cfg, d),
                                                            *d["int4tc" if tc else kind][:3]))

    def kname(c):     # an int4 config's kernel; the tc kernel's two unpackings apart
        return c.get("KERNEL", "nibble") + ("-asm" if c.get("ASM") else "")

    best = {kind: {} for kind in kinds}
    for d in data:
        for kind in kinds:
            ok = [r for r in tried[(kind, d["k"], d["n"])] if "us" in r]
            if not ok:
                continue
            key = f"{d['k']}x{d['n']}"
            top = min(ok, key=lambda r: r["us"])
            best[kind][key] = top["config"]
            tg = d["base"].get("tinygemm", {})
            # the module then stays on tinygemm (on the CPU the interpreter's times say nothing)
            if kind == "int4" and cuda and "us" in tg and tg["us"] < top["us"]:
                best[kind][key] = dict(KERNEL="tinygemm")
            today, base = d["today"][kind], d["base"]
            gain = today["us"] / top["us"] if "us" in today else float("nan")
            per_kernel = ""
            if kind == "int4":    # the best of each Triton kernel, against tinygemm
                for name in sorted({kname(r["config"]) for r in ok}):
                    b = min((r for r in ok if kname(r["config"]) == name), key=lambda r: r["us"])
                    per_kernel += f"  best {name} {b['us']:.1f} us ({b['gbps']:.0f} GB/s)"
                per_kernel += f"  -> table {best[kind][key]}"
            print(f"{d['k']:6d} -> {d['n']:6d}  {kind}: bf16 {base['bf16'].get('us', float('nan')):7.1f} us "
                  f"({base['bf16'].get('gbps', 0):5.0f} GB/s)  tinygemm "
                  f"{base.get('tinygemm', {}).get('us', float('nan')):7.1f} us "
                  f"({base.get('tinygemm', {}).get('gbps', 0):5.0f} GB/s)  today "
                  f"{today.get('us', float('nan')):7.1f} us ({today.get('gbps', 0):5.0f} GB/s)  best {top['us']:7.1f} "
                  f"us ({top['gbps']:5.0f} GB/s, {gain:.2f}x today, {len(ok)} configs) {top['config']}{per_kernel}",
                  flush=True)

    if "int4" in kinds:    # the int4 summary: tinygemm against each Triton kernel's best, per shape
        print("\nint4 per shape: tinygemm and each kernel's best (us, GB/s of packed weights + scales, x tinygemm)")
        for d in data:
            tg = d["base"].get("tinygemm", {})
            ok = [r for r in tried[("int4", d["k"], d["n"])] if "us" in r]
            line = f"  {d['k']:6d} -> {d['n']:6d}  tinygemm {tg.get('us', float('nan')):7.1f} us {tg.get('gbps', 0):5.0f} GB/s"
            for name in sorted({kname(r["config"]) for r in ok}):
                b = min((r for r in ok if kname(r["config"]) == name), key=lambda r: r["us"])
                cfg = ",".join(f"{k}={v}" for k, v in b["config"].items() if k not in ("KERNEL", "ASM"))
                line += f"  | {name} {b['us']:7.1f} us {b['gbps']:5.0f} GB/s ({tg.get('us', float('nan')) / b['us']:.2f}x; {cfg})"
            print(line, flush=True)

    lines = ["| K -> N | kernel | config | us/call | GB/s | max rel err |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["kernel"] == "candidate" and r["config"] != best.get(r["kind"], {}).get(f"{r['K']}x{r['N']}"):
            continue    # the table keeps the baselines and each shape's best; the JSON keeps every timing
        name = f"{r['kind']} {r['kernel']}" if r["kernel"] != "bf16 F.linear" else r["kernel"]
        lines.append(f"| {r['K']} -> {r['N']} | {name} | {json.dumps(r['config']) if r['config'] else ''} | " + (
            f"{r['us']:.1f} | {r['gbps']:.0f} | {r['max_rel_err']:.1e} |" if "us" in r else f"{r['error']} | | |"))
    table = "\n".join(lines)
    print("\n" + table)
    if skipped:
        print(f"{skipped} candidates skipped: time budget {args.time_budget:.0f} s")
    print("TUNED =", json.dumps({kind: {s: c for s, c in shapes_.items()} for kind, shapes_ in best.items()}))
    if cuda:
        info["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    info["wall_s"], info["skipped"] = time.perf_counter() - start, skipped
    out = Path(args.out or os.environ.get("OUT") or "out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "sweep_gemv.json", json.dumps(dict(settings=info, rows=rows), indent=1))
    atomic_write_text(out / "gemv_configs.json", json.dumps(best, indent=1))
    atomic_write_text(out / "sweep_gemv.md", f"# sweep_gemv\n\nSettings: {json.dumps(info)}\n\n{table}\n")
    print(f"wrote {out / 'sweep_gemv.json'}, {out / 'gemv_configs.json'} ({info['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
