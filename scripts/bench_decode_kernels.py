"""Launch-config sweep of two decode-step kernels at Llama-3-8B shapes, batch 1 (issue #11): sysq's decode attention
and the int8 weight-only GEMV (with and without the gated SiLU prologue).

    python scripts/bench_decode_kernels.py --out $OUT/dec       # CUDA: both parts, full grids cut by --time-budget
    python scripts/bench_decode_kernels.py --quick              # CUDA: the trimmed grids only
    python scripts/bench_decode_kernels.py --device cpu --quick # tiny shapes in Triton's interpreter (checks it runs)

(a) Decode attention (sysq/attention.py, sysq/_attention_triton.py) at B=1, H=32, Hkv=8, D=128, bf16, for cache
lengths L in ATTN["ls"] without a mask, and at ATTN["mask_l"] with a boolean mask (a static cache's: its last keys
masked). Rows: the op as shipped (torch.ops.sysq.decode_attention, attention.launch_config), torch sdpa over the
expanded cache (repeat_kv + sdpa, what transformers runs), and sysq.attention.decode_attention over a grid of launch
configs (BLOCK_L, num_warps, num_stages, SPLIT). With SPLIT > 1 "us" is the kernel and the combine of its slices as
the op runs them (eager torch ops), "kernel us" the kernel alone (what a fused combine could approach). BLOCK_L
above the next power of two of L, and SPLIT above the blocks of keys, are not tried. Every output is checked
against float32 attention over the expanded cache (max abs error; flagged over 2e-2, never "best"). The mask case
runs the shipped config and the best --mask-top configs of the same L without the mask.

(b) int8 GEMV (sysq/quant/_gemv_triton.py) on the scaled path (SPLIT_K = 1: scale and cast in the kernel, what
Int8WOLinear runs) at the fused decode shapes K -> N, and the down projection 14336 -> 4096 two ways: GATED
(silu(gate) * up in the kernel's prologue, x = [gate | up]) against the pointwise silu(gate) * up as its own kernel
(torch.compile'd, bf16 out; eager where compile fails) followed by the plain scaled GEMV, timed together. Rows:
today's launch (gemv.TUNED, else autotuned: the autotuner's pick is printed), each config of the grid (BLOCK_N,
BLOCK_K, num_warps, num_stages; configs whose accumulator alone takes over 128 registers a thread are skipped:
they spill). GB/s = int8 weight bytes per call / time. Errors: max relative to the float product of the
dequantized weight (flagged over 1e-2).

Timing: scripts/bench_gemv.py's graph_us, a CUDA graph of many calls cycling through copies of the weights or K/V
caches (>= --bust-mib in all, so the 50 MiB L2 serves none, as in a decode step). Candidates compile ahead in --jobs
worker processes (into Triton's disk cache; nothing runs on the GPU there) in the order they are timed: the --quick
grid first, then the rest of the grid shuffled, so a --time-budget cut leaves a random sample of the rest.
Writes OUT/bench_decode_kernels.{md,json} (OUT: --out, $OUT, out/).
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gemv import graph_us, print_settings, resolve_device  # noqa: E402
from sweep_gemv import candidates  # noqa: E402

ATTN = dict(h=32, hkv=8, d=128, ls=[96, 160, 544, 2080], mask_l=96)
ATTN_TINY = dict(h=8, hkv=2, d=32, ls=[24, 40], mask_l=24)
ATTN_GRID = dict(BLOCK_L=[16, 32, 64, 128, 256], num_warps=[1, 2, 4, 8], num_stages=[1, 2, 3], SPLIT=[1, 2, 4, 8])
ATTN_QUICK = dict(BLOCK_L=[32, 64, 128], num_warps=[2, 4], num_stages=[1, 2], SPLIT=[1, 2, 4])
ATTN_TINY_GRID = dict(BLOCK_L=[16, 32], num_warps=[4], num_stages=[2], SPLIT=[1, 2, 4])
ATTN_TINY_QUICK = dict(BLOCK_L=[16, 32], num_warps=[4], num_stages=[2], SPLIT=[1, 2])

GEMV_SHAPES = [(14336, 4096), (4096, 6144), (4096, 4096), (4096, 28672)]   # (K, N): down (also gated), qkv, o, gate/up
GEMV_TINY = [(512, 96), (256, 128)]
GEMV_GRID = dict(BLOCK_N=[4, 8, 16, 32], BLOCK_K=[256, 512, 1024, 2048], num_warps=[1, 2, 4, 8],
                 num_stages=[1, 2, 3, 4])
GEMV_QUICK = dict(BLOCK_N=[8, 16, 32], BLOCK_K=[512, 1024], num_warps=[2, 4], num_stages=[1, 2, 3])
GEMV_TINY_GRID = dict(BLOCK_N=[8, 16], BLOCK_K=[256], num_warps=[4], num_stages=[2])
GEMV_TINY_QUICK = dict(BLOCK_N=[16], BLOCK_K=[256], num_warps=[4], num_stages=[2])
ATTN_TOL, GEMV_TOL = 2e-2, 1e-2


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default=None, help="cuda (default when present) or cpu (interpreter, tiny shapes)")
    p.add_argument("--parts", default="attention,gemv", help="attention, gemv or both")
    p.add_argument("--quick", action="store_true", help="only the trimmed grids (ATTN_QUICK, GEMV_QUICK)")
    p.add_argument("--time-budget", type=float, default=125.0, help="seconds from the start; configs not started by "
                   "then are skipped (said so); attention's sweep stops at --attn-share of it")
    p.add_argument("--attn-share", type=float, default=0.45)
    p.add_argument("--mask-top", type=int, default=6, help="configs (best without the mask) timed with the mask")
    p.add_argument("--calls", type=int, default=40, help="calls per CUDA graph (at least the copies)")
    p.add_argument("--reps", type=int, default=4, help="replays of each CUDA graph timed")
    p.add_argument("--bust-mib", type=int, default=256, help="GEMV weight copies total at least this")
    p.add_argument("--attn-bust-mib", type=int, default=128, help="K/V cache copies total at least this")
    p.add_argument("--jobs", type=int, default=None, help="worker processes compiling ahead (0: none; default "
                   "min(12, cores - 3) on CUDA, 0 on the CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def ordered(quick: dict, full: dict | None, first=(), seed: int = 0) -> list[dict]:
    """`first`, then the quick grid, then (full given) the rest of the full grid shuffled; no repeats."""
    out, seen = [], set()
    rest = candidates(full) if full else []
    random.Random(seed).shuffle(rest)
    for c in [*first, *candidates(quick), *rest]:
        key = json.dumps(c, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def attn_fits(cfg: dict, length: int) -> bool:
    """Not pointless at this cache length: BLOCK_L up to the next power of two of L, a block of keys per slice."""
    return cfg["BLOCK_L"] <= max(16, pow2(length)) and cfg["SPLIT"] <= -(-length // cfg["BLOCK_L"])


def gemv_fits(cfg: dict) -> bool:
    """The fp32 accumulator tile [BLOCK_N, BLOCK_K / 4] takes at most 128 registers a thread (else it spills)."""
    return cfg["BLOCK_N"] * cfg["BLOCK_K"] // 4 <= 128 * 32 * cfg.get("num_warps", 4)


def cfg_str(cfg) -> str:
    return "" if not cfg else " ".join(f"{k}={v}" for k, v in cfg.items())


# ---- the data of each case (built the same way by the worker processes, so the compiled specializations match)

def attn_case(dims: dict, length: int, masked: bool, device, copies_mib: float = 0, seed: int = 0, empty=False):
    """q [1, H, 1, D], K/V copies [(k, v)] [1, Hkv, L, D] bf16 (enough to total copies_mib), the [1, L] bool mask
    view of a [1, 1, 1, L] mask (its last eighth masked) or None."""
    import torch
    gen = None if empty else torch.Generator(device=device).manual_seed(seed + length)
    make = (lambda *s: torch.empty(*s, device=device, dtype=torch.bfloat16)) if empty else \
        (lambda *s: torch.randn(*s, device=device, generator=gen).to(torch.bfloat16))
    h, hkv, d = dims["h"], dims["hkv"], dims["d"]
    q = make(1, h, 1, d)
    per = 2 * hkv * length * d * 2
    n = max(1, math.ceil(copies_mib * 2**20 / per))
    first = (make(1, hkv, length, d), make(1, hkv, length, d))
    copies = [first] + [(first[0].clone(), first[1].clone()) for _ in range(n - 1)]
    mask4 = None
    if masked:
        mask4 = torch.ones(1, 1, 1, length, dtype=torch.bool, device=device)
        mask4[..., length - max(1, length // 8):] = False
    mask = None if mask4 is None else mask4[:, 0, 0, :].expand(1, length)   # what sysq.attention's forward passes
    return dict(L=length, masked=masked, q=q, copies=copies, mask=mask, mask4=mask4, scale=d ** -0.5,
                kv_mib=per / 2**20)


def gemv_case(k: int, n: int, device, copies_mib: float = 0, seed: int = 0, empty=False):
    """x bf16 [1, K], gate_up bf16 [1, 2K], int8 weight copies [N, K], fp32 per-channel scale [N]."""
    import torch
    if empty:
        x = torch.empty(1, k, device=device, dtype=torch.bfloat16)
        gu = torch.empty(1, 2 * k, device=device, dtype=torch.bfloat16)
        q8 = torch.empty(n, k, device=device, dtype=torch.int8)
        s8 = torch.empty(n, device=device, dtype=torch.float32)
        return dict(k=k, n=n, x=x, gu=gu, copies=[q8], s8=s8)
    gen = torch.Generator(device=device).manual_seed(seed + k + n)
    x = torch.randn(1, k, device=device, generator=gen).to(torch.bfloat16)
    gu = torch.randn(1, 2 * k, device=device, generator=gen).to(torch.bfloat16)
    w = torch.randn(n, k, device=device, generator=gen) * 0.02
    s8 = (w.abs().amax(1) / 127).clamp_min(1e-8)
    q8 = torch.round(w / s8[:, None]).clamp(-127, 127).to(torch.int8)
    del w
    copies = [q8] + [q8.clone() for _ in range(max(0, math.ceil(copies_mib * 2**20 / (n * k)) - 1))]
    return dict(k=k, n=n, x=x, gu=gu, copies=copies, s8=s8)


def attn_call(case, cfg, kernel_only=False):
    from sysq import attention
    q, mask, scale = case["q"], case["mask"], case["scale"]
    if kernel_only:
        return lambda c: attention.launch_decode(q, c[0], c[1], mask, scale, cfg)[0]
    return lambda c: attention.decode_attention(q, c[0], c[1], mask, scale, cfg)


def gemv_call(case, cfg, gated: bool):
    from sysq.quant import gemv
    x = case["gu"] if gated else case["x"]
    return lambda c: gemv._launch("int8", x, c, case["s8"], 0, 1, cfg, gated=gated)


# ---- compiling ahead in worker processes

_WORKER = {}


def _worker_init(device: str) -> None:
    """A worker: every Triton launch in this process only compiles (JITFunction warmup), into the disk cache the
    timing process reads; the interpreter (CPU) has nothing to compile."""
    _WORKER["device"] = device
    if os.environ.get("TRITON_INTERPRET") == "1":
        return
    from triton.runtime.jit import JITFunction
    JITFunction.__getitem__ = lambda self, grid: (lambda *a, **kw: self.run(*a, grid=grid, warmup=True, **kw))


def _compile_only(task) -> str | None:
    """Compile one candidate (part, config, case spec); returns None, or the compile error."""
    part, cfg, spec = task
    if os.environ.get("TRITON_INTERPRET") == "1":
        return None
    try:
        dev = _WORKER["device"]
        if spec not in _WORKER:     # ("attention", h, hkv, d, L) or ("gemv", K, N, gated)
            _WORKER[spec] = attn_case(dict(h=spec[1], hkv=spec[2], d=spec[3]), spec[4], False, dev, empty=True) \
                if part == "attention" else gemv_case(spec[1], spec[2], dev, empty=True)
        case = _WORKER[spec]
        fn = attn_call(case, cfg, kernel_only=True) if part == "attention" else gemv_call(case, cfg, spec[3])
        fn(case["copies"][0])
        return None
    except Exception as e:
        return f"compile: {type(e).__name__}: {str(e)[:200]}"


class Ahead:
    """Candidates compile in a pool of worker processes, `window` tasks ahead of the one being timed, in the order
    of `tasks` ([(key, task)]); wait(key) skips the tasks before it that were not sent yet."""

    def __init__(self, jobs: int, device: str, tasks: list):
        self.pool, self.tasks, self.window = None, tasks, 2 * jobs
        self.index = {key: i for i, (key, _) in enumerate(tasks)}
        self.next, self.sent = 0, {}
        if jobs > 0 and tasks:
            try:
                import multiprocessing as mp
                self.pool = mp.get_context("spawn").Pool(jobs, initializer=_worker_init, initargs=(device,))
                self._send(self.window)
            except Exception as e:
                print(f"compile workers: not started ({type(e).__name__}: {e}); compiling in this process")
                self.pool = None

    def _send(self, until: int) -> None:
        while self.next < min(len(self.tasks), until):
            key, task = self.tasks[self.next]
            self.sent[key] = self.pool.apply_async(_compile_only, (task,))
            self.next += 1

    def wait(self, key) -> None:
        """Until a worker has compiled `key` (this process launches it either way: a worker's error is printed,
        and this process compiles what a worker did not). A worker that does not answer in 120 s ends the pool."""
        if self.pool is None or key not in self.index:
            return
        i = self.index[key]
        self.next = max(self.next, i)
        self._send(i + 1 + self.window)
        r = self.sent.pop(key, None)
        try:
            note = None if r is None else r.get(timeout=120)
        except Exception as e:      # workers dying or hung: compile here from now on
            print(f"compile workers: no answer ({type(e).__name__}); compiling in this process from now on")
            self.close()
            return
        if note:
            print(f"  worker {note} ({key})")

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None


# ---- the sweep

def main(argv=None) -> int:
    args = parse(argv)
    cuda = resolve_device(args)
    import torch
    import torch.nn.functional as F

    from sysq import attention
    from sysq.io import atomic_write_text
    from sysq.quant import gemv

    dev, start = args.device, time.perf_counter()
    parts = args.parts.split(",")
    jobs = args.jobs if args.jobs is not None else (max(0, min(12, (os.cpu_count() or 1) - 3)) if cuda else 0)
    dims = ATTN if cuda else ATTN_TINY
    shapes = GEMV_SHAPES if cuda else GEMV_TINY
    if cuda:
        agrid, gqgrid = (ATTN_QUICK, None if args.quick else ATTN_GRID), (GEMV_QUICK, None if args.quick else GEMV_GRID)
    else:
        agrid = (ATTN_TINY_QUICK, None if args.quick else ATTN_TINY_GRID)
        gqgrid = (GEMV_TINY_QUICK, None if args.quick else GEMV_TINY_GRID)
    today_int8 = []      # the autotuner's candidates (today's launch is one of them), timed first
    if cuda:
        from sysq.quant import _gemv_triton as T
        today_int8 = [dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages) for c in T.INT8_CONFIGS]
    attn_cfgs = ordered(*agrid, seed=args.seed) if "attention" in parts else []
    gemv_cfgs = [c for c in ordered(*gqgrid, first=today_int8, seed=args.seed) if gemv_fits(c)] \
        if "gemv" in parts else []
    info = dict(device=torch.cuda.get_device_name() if cuda else "cpu (Triton interpreter)", torch=torch.__version__,
                attention=dims, gemv_shapes=[f"{k}x{n}" for k, n in shapes], quick=args.quick, jobs=jobs,
                attn_configs=len(attn_cfgs), gemv_configs=len(gemv_cfgs), time_budget=args.time_budget,
                calls=args.calls, reps=args.reps, bust_mib=args.bust_mib, attn_bust_mib=args.attn_bust_mib,
                shipped_attention=attention.launch_config(1, dims["hkv"], dims["ls"][0], dev, dims["d"]))
    print_settings(info)

    # the compile-ahead order: attention configs (at their first L that fits), then GEMV (plain, gated) configs
    tasks = []
    for c in attn_cfgs:
        fit = [length for length in dims["ls"] if attn_fits(c, length)]
        if fit:
            spec = ("attention", dims["h"], dims["hkv"], dims["d"], fit[0])
            tasks.append((("attention", json.dumps(c)), ("attention", c, spec)))
    for c in gemv_cfgs:
        for gated in (False, True):
            tasks.append((("gemv", gated, json.dumps(c)), ("gemv", c, ("gemv", *shapes[0], gated))))
    ahead = Ahead(jobs, dev, tasks)

    def measure(fn, copies):
        if not cuda:     # one eager call in the interpreter: proves it runs, says nothing of speed
            t = time.perf_counter()
            fn(copies[0])
            return (time.perf_counter() - t) * 1e6
        return graph_us(fn, copies, args.calls, reps=args.reps)

    rows, summary, skipped = [], {}, collections.Counter()
    try:
        if "attention" in parts:
            attention_part(args, dims, attn_cfgs, dev, cuda, start, ahead, measure, rows, summary, skipped, torch, F)
        if "gemv" in parts:
            gemv_part(args, shapes, gemv_cfgs, dev, cuda, start, ahead, measure, rows, summary, skipped, torch, F,
                      gemv)
    finally:
        ahead.close()

    tables = tables_md(rows, summary)
    print("\n" + tables)
    if skipped:
        print("skipped (time budget): " + ", ".join(f"{k} {v}" for k, v in skipped.items()))
    if cuda:
        info["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    info["wall_s"], info["skipped"] = time.perf_counter() - start, dict(skipped)
    out = Path(args.out or os.environ.get("OUT") or "out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "bench_decode_kernels.json", json.dumps(dict(settings=info, summary=summary, rows=rows),
                                                                    indent=1, default=str))
    atomic_write_text(out / "bench_decode_kernels.md", f"# bench_decode_kernels\n\nSettings: {json.dumps(info)}\n\n"
                      f"{tables}\n")
    print(f"wrote {out / 'bench_decode_kernels.json'}, .md ({info['wall_s']:.0f} s)")
    return 0


def attention_part(args, dims, cfgs, dev, cuda, start, ahead, measure, rows, summary, skipped, torch, F):
    from sysq import attention
    until = start + args.time_budget * args.attn_share
    cases = {(length, False): attn_case(dims, length, False, dev, args.attn_bust_mib if cuda else 0, args.seed)
             for length in dims["ls"]}
    mk = attn_case(dims, dims["mask_l"], True, dev, empty=True)   # the mask case: the same q and K/V, a mask
    cases[(dims["mask_l"], True)] = dict(cases[(dims["mask_l"], False)], masked=True, mask=mk["mask"],
                                         mask4=mk["mask4"])
    g = dims["h"] // dims["hkv"]

    for case in cases.values():   # float32 attention over the expanded cache
        k0, v0 = case["copies"][0]
        m4 = None if case["mask4"] is None else case["mask4"]
        case["ref"] = F.scaled_dot_product_attention(
            case["q"].float(), k0.repeat_interleave(g, 1).float(), v0.repeat_interleave(g, 1).float(), attn_mask=m4,
            scale=case["scale"]).transpose(1, 2)

    def record(case, kernel, cfg, fn, kfn=None):
        row = dict(part="attention", L=case["L"], mask=case["masked"], kernel=kernel, config=cfg)
        try:
            y = fn(case["copies"][0])
            row["max_abs_err"] = err = float((y.float() - case["ref"]).abs().max())
            row["flag"] = not err <= ATTN_TOL
            row["us"] = measure(fn, case["copies"])
            if kfn is not None and cuda:
                row["kernel_us"] = measure(kfn, case["copies"])
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
        rows.append(row)
        return row

    def repeat_kv(t):
        b, hkv, length, d = t.shape
        return t[:, :, None].expand(b, hkv, g, length, d).reshape(b, hkv * g, length, d)

    for (length, masked), case in cases.items():
        q, mask, mask4, scale = case["q"], case["mask"], case["mask4"], case["scale"]
        shipped = attention.launch_config(1, dims["hkv"], length, dev, dims["d"])
        case["shipped"] = record(case, "shipped op", shipped,
                                 lambda c: torch.ops.sysq.decode_attention(q, c[0], c[1], mask, scale))
        record(case, "torch sdpa (repeat_kv)", None, lambda c: F.scaled_dot_product_attention(
            q, repeat_kv(c[0]), repeat_kv(c[1]), attn_mask=mask4, scale=scale).transpose(1, 2))
        print(f"attention L={length:5d} mask={masked!s:5}  shipped {case['shipped'].get('us', float('nan')):8.2f} us "
              f"{cfg_str(shipped)}  sdpa {rows[-1].get('us', float('nan')):8.2f} us", flush=True)

    for i, cfg in enumerate(cfgs):
        fits = [(length, cases[(length, False)]) for length in dims["ls"] if attn_fits(cfg, length)]
        if not fits:
            continue
        if time.perf_counter() > until:
            skipped["attention configs"] += 1
            continue
        ahead.wait(("attention", json.dumps(cfg)))
        for length, case in fits:
            kfn = attn_call(case, cfg, kernel_only=True) if cfg["SPLIT"] > 1 else None
            record(case, "candidate", cfg, attn_call(case, cfg), kfn)
        if (i + 1) % 20 == 0:
            print(f"  attention: {i + 1}/{len(cfgs)} configs ({time.perf_counter() - start:.0f} s)", flush=True)

    def ok(length, masked):
        return [r for r in rows if r["part"] == "attention" and r["kernel"] == "candidate" and r["L"] == length
                and r["mask"] == masked and "us" in r and not r["flag"]]

    # the mask case: the shipped config (above) and the best configs without the mask at that L
    mcase = cases[(dims["mask_l"], True)]
    for r in sorted(ok(dims["mask_l"], False), key=lambda r: r["us"])[:args.mask_top]:
        cfg = r["config"]
        record(mcase, "candidate", cfg, attn_call(mcase, cfg),
               attn_call(mcase, cfg, kernel_only=True) if cfg["SPLIT"] > 1 else None)

    for (length, masked), case in cases.items():
        cand = ok(length, masked)
        sh = case["shipped"]
        key = f"L={length}" + (" mask" if masked else "")
        if not cand:
            summary[key] = dict(shipped=sh)
            continue
        best = min(cand, key=lambda r: r["us"])
        per_split = {}
        for r in cand:
            s = r["config"]["SPLIT"]
            if s not in per_split or r["us"] < per_split[s]["us"]:
                per_split[s] = r
        flagged = sum(1 for r in rows if r["part"] == "attention" and r["L"] == length and r["mask"] == masked
                      and r.get("flag"))
        summary[key] = dict(part="attention", shipped_us=sh.get("us"), shipped_config=sh["config"], best_us=best["us"],
                            best_config=best["config"], best_err=best["max_abs_err"], configs=len(cand),
                            flagged=flagged,
                            best_per_split={s: (r["us"], r["config"]) for s, r in sorted(per_split.items())})
        gain = sh["us"] / best["us"] if "us" in sh else float("nan")
        print(f"attention {key:11s}: shipped {sh.get('us', float('nan')):7.2f} us -> best {best['us']:7.2f} us "
              f"({gain:.2f}x; {cfg_str(best['config'])}; err {best['max_abs_err']:.1e}; {len(cand)} configs, "
              f"{flagged} flagged)  best per SPLIT: " + ", ".join(
                  f"{s}: {r['us']:.2f}" + (f" (kernel {r['kernel_us']:.2f})" if "kernel_us" in r else "")
                  for s, r in sorted(per_split.items())), flush=True)
    del cases
    if cuda:
        torch.cuda.empty_cache()


def gemv_part(args, shapes, cfgs, dev, cuda, start, ahead, measure, rows, summary, skipped, torch, F, gemv):
    until = start + args.time_budget
    data = [gemv_case(k, n, dev, args.bust_mib if cuda else 0, args.seed) for k, n in shapes]
    down = data[0]                # its weight also takes the gated rows
    kd = down["k"]
    for d in data:               # float references: the dequantized weight's product
        wf = d["copies"][0].float() * d["s8"][:, None]
        d["ref"] = d["x"].float() @ wf.t()
        if d is down:
            gate, up = d["gu"][:, :kd].float(), d["gu"][:, kd:].float()
            h = (F.silu(gate) * up).to(torch.bfloat16).float()        # the activation rounded as it is stored
            d["ref_gated"] = h @ wf.t()
        del wf

    def silu_mul(gu):
        return F.silu(gu[:, :kd]) * gu[:, kd:]
    pw, pw_name = silu_mul, "eager (silu, mul)"
    if cuda:
        try:
            comp = torch.compile(silu_mul, dynamic=False)
            comp(down["gu"])
            pw, pw_name = comp, "torch.compile (one kernel)"
        except Exception as e:
            print(f"  pointwise: torch.compile failed ({type(e).__name__}: {str(e)[:120]}); eager")

    def record(d, path, cfg, fn, gated, copies=None):
        """gated: checked against the gated reference; None: not checked (the pointwise kernel alone)."""
        row = dict(part="gemv", K=d["k"], N=d["n"], path=path, config=cfg)
        try:
            copies = copies or d["copies"]
            y = fn(copies[0])
            row["flag"] = False
            if gated is not None:
                ref = d["ref_gated"] if gated else d["ref"]
                row["max_rel_err"] = err = float((y.float() - ref).abs().max() / ref.abs().max())
                row["flag"] = not err <= GEMV_TOL
            row["us"] = us = measure(fn, copies)
            if gated is not None:
                row["gbps"] = d["n"] * d["k"] / us / 1e3
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
        rows.append(row)
        return row

    def picked(k, n, gated):
        """Today's launch config of the scaled GEMV at (K, N): gemv.TUNED's, else the autotuner's pick."""
        t = gemv.tuned("int8", 1, k, n)
        if t:
            return dict(t, source="tuned")
        try:
            from sysq.quant import _gemv_triton as T
            for key, c in T.kernels()["int8"][0].cache.items():
                if tuple(key[:6]) == (1, n, k, 1, True, gated):
                    return dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages, source="autotuned")
        except Exception:
            pass
        return None

    today = {}
    for d in data:
        r = record(d, "today", None, lambda c, d=d: gemv.int8_gemv_scaled(d["x"], c, d["s8"]), False)
        r["config"] = picked(d["k"], d["n"], False)
        today[(d["k"], d["n"], False)] = r
    gated = torch.ops.sysq.int8_gemv_gated_scaled        # the op itself: gemv.int8_gemv_gated is off by default
    r = record(down, "gated today", None, lambda c: gated(down["gu"].contiguous(), c, down["s8"]), True)
    r["config"] = picked(kd, down["n"], True)
    today[(kd, down["n"], True)] = r
    pw_row = record(down, f"pointwise silu*up alone: {pw_name}", None, lambda c: pw(down["gu"]), None,
                    copies=[down["gu"]])
    sep_today = record(down, "separate today: pointwise + scaled GEMV", None,
                       lambda c: gemv.int8_gemv_scaled(pw(down["gu"]), c, down["s8"]), True)
    for (k, n, gated), r in today.items():
        print(f"gemv {k:6d} -> {n:6d}{' gated' if gated else '      '} today {r.get('us', float('nan')):7.2f} us "
              f"({r.get('gbps', 0):5.0f} GB/s) {cfg_str(r['config'])}", flush=True)
    print(f"gemv pointwise silu*up ({pw_name}) {pw_row.get('us', float('nan')):.2f} us; separate today "
          f"{sep_today.get('us', float('nan')):.2f} us", flush=True)

    for i, cfg in enumerate(cfgs):
        if time.perf_counter() > until:
            skipped["gemv configs"] += 1
            continue
        for gated in (False, True):
            ahead.wait(("gemv", gated, json.dumps(cfg)))
            for d in ([down] if gated else data):
                record(d, "gated" if gated else "plain", cfg, gemv_call(d, cfg, gated), gated)
        if (i + 1) % 25 == 0:
            print(f"  gemv: {i + 1}/{len(cfgs)} configs ({time.perf_counter() - start:.0f} s)", flush=True)

    def best_of(k, n, path):
        ok = [r for r in rows if r["part"] == "gemv" and (r["K"], r["N"]) == (k, n) and r["path"] == path
              and "us" in r and not r["flag"]]
        return (min(ok, key=lambda r: r["us"]), len(ok)) if ok else (None, 0)

    # the down projection the other way, with its best plain config: pointwise kernel + scaled GEMV, together
    bp, _ = best_of(kd, down["n"], "plain")
    sep_best = None
    if bp is not None:
        cfg = bp["config"]
        sep_best = record(down, "separate best: pointwise + scaled GEMV", cfg,
                          lambda c: gemv._launch("int8", pw(down["gu"]), c, down["s8"], 0, 1, cfg), True)

    for d in data:
        for path, gated in [("plain", False)] + ([("gated", True)] if d is down else []):
            best, count = best_of(d["k"], d["n"], path)
            t = today[(d["k"], d["n"], gated)]
            key = f"{d['k']}x{d['n']}" + (" gated" if gated else "")
            summary[key] = dict(part="gemv", today_us=t.get("us"), today_config=t.get("config"),
                                today_gbps=t.get("gbps"), today_err=t.get("max_rel_err"), configs=count,
                                **({} if best is None else dict(best_us=best["us"], best_config=best["config"],
                                                                 best_gbps=best["gbps"], best_err=best["max_rel_err"])))
            if best is not None:
                print(f"gemv {key:18s}: today {t.get('us', float('nan')):7.2f} us ({t.get('gbps', 0):5.0f} GB/s, "
                      f"err {t.get('max_rel_err', float('nan')):.1e}) -> best {best['us']:7.2f} us "
                      f"({best['gbps']:5.0f} GB/s, err {best['max_rel_err']:.1e}; {cfg_str(best['config'])}; "
                      f"{count} configs)", flush=True)
    summary["down: gated vs separate"] = dict(
        part="gemv", pointwise_us=pw_row.get("us"), pointwise=pw_name, separate_today_us=sep_today.get("us"),
        gated_today_us=today[(kd, down["n"], True)].get("us"),
        separate_best_us=None if sep_best is None else sep_best.get("us"),
        gated_best_us=summary.get(f"{kd}x{down['n']} gated", {}).get("best_us"))
    s = summary["down: gated vs separate"]
    print("gemv down: gated today {gated_today_us}, best {gated_best_us}; separate (pointwise + GEMV) today "
          "{separate_today_us}, best {separate_best_us} us (pointwise alone {pointwise_us})".format(
              **{k: (f"{v:.2f}" if isinstance(v, float) else v) for k, v in s.items()}), flush=True)


def tables_md(rows, summary) -> str:
    def f(v, spec):
        return format(v, spec) if isinstance(v, (int, float)) and v is not None else ""
    out = []
    att = [(k, s) for k, s in summary.items() if s.get("part") == "attention"]
    if att:
        out += ["## Decode attention (B=1; us per call in a CUDA graph; us = kernel + combine)", "",
                "| case | shipped us | shipped config | best us | best config | speedup | best err | configs | flagged "
                "| best per SPLIT (us) |", "|---|---|---|---|---|---|---|---|---|---|"]
        for k, s in att:
            sp = "; ".join(f"{n}: {v[0]:.2f}" for n, v in s["best_per_split"].items())
            out.append(f"| {k} | {f(s['shipped_us'], '.2f')} | {cfg_str(s['shipped_config'])} | {s['best_us']:.2f} | "
                       f"{cfg_str(s['best_config'])} | {s['shipped_us'] / s['best_us'] if s['shipped_us'] else 0:.2f}x "
                       f"| {s['best_err']:.1e} | {s['configs']} | {s['flagged']} | {sp} |")
        out += ["", "Reference rows and the 5 best configs per case:", "",
                "| L | mask | kernel | config | us | kernel us | max abs err |", "|---|---|---|---|---|---|---|"]
        arows = [r for r in rows if r["part"] == "attention"]
        for key in dict.fromkeys((r["L"], r["mask"]) for r in arows):
            mine = [r for r in arows if (r["L"], r["mask"]) == key]
            top = sorted((r for r in mine if r["kernel"] == "candidate" and "us" in r and not r["flag"]),
                         key=lambda r: r["us"])[:5]
            for r in [r for r in mine if r["kernel"] != "candidate"] + top:
                out.append(f"| {r['L']} | {r['mask']} | {r['kernel']} | {cfg_str(r['config'])} | "
                           + (f"{r['us']:.2f} | {f(r.get('kernel_us'), '.2f')} | {r['max_abs_err']:.1e}"
                              + (" FLAG" if r["flag"] else "") + " |" if "us" in r else f"{r.get('error')} | | |"))
        out.append("")
    gem = [(k, s) for k, s in summary.items() if s.get("part") == "gemv" and "today_us" in s]
    if gem:
        out += ["## int8 GEMV, scaled path (M=1; GB/s of the int8 weights)", "",
                "| K x N | today us | today GB/s | today config | best us | best GB/s | best config | speedup | "
                "best err | configs |", "|---|---|---|---|---|---|---|---|---|---|"]
        for k, s in gem:
            out.append(f"| {k} | {f(s['today_us'], '.2f')} | {f(s['today_gbps'], '.0f')} | "
                       f"{cfg_str(s['today_config'])} | {f(s.get('best_us'), '.2f')} | "
                       f"{f(s.get('best_gbps'), '.0f')} | "
                       f"{cfg_str(s.get('best_config'))} | "
                       f"{f(s['today_us'] / s['best_us'] if s.get('best_us') and s['today_us'] else None, '.2f')}x | "
                       f"{f(s.get('best_err'), '.1e')} | {s['configs']} |")
        s = summary.get("down: gated vs separate")
        if s:
            out += ["", "Down projection, gated prologue vs pointwise kernel + plain GEMV (us):", "",
                    "| pointwise alone | separate today | separate best | gated today | gated best |",
                    "|---|---|---|---|---|",
                    f"| {f(s['pointwise_us'], '.2f')} ({s['pointwise']}) | {f(s['separate_today_us'], '.2f')} | "
                    f"{f(s['separate_best_us'], '.2f')} | {f(s['gated_today_us'], '.2f')} | "
                    f"{f(s['gated_best_us'], '.2f')} |"]
        out += ["", "Non-candidate rows:", "", "| K x N | path | config | us | GB/s | max rel err |",
                "|---|---|---|---|---|---|"]
        for r in rows:
            if r["part"] == "gemv" and r["path"] not in ("plain", "gated"):
                out.append(f"| {r['K']}x{r['N']} | {r['path']} | {cfg_str(r['config'])} | "
                           + (f"{r['us']:.2f} | {f(r.get('gbps'), '.0f')} | {f(r.get('max_rel_err'), '.1e')} |"
                              if "us" in r else f"{r.get('error')} | | |"))
    errs = sum(1 for r in rows if "error" in r)
    if errs:
        out += ["", f"{errs} rows failed (errors in the JSON)."]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
