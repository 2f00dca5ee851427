"""Generation speed and memory of FP and every real backend, eager and compiled, in one run (`sysq bench`).

    sysq bench                                                        # CPU: SmolLM2 (fp32), all rows, isolated
    sysq bench --device cuda --model config:llama3-8b --phases prefill
    python scripts/bench_generate.py ...                              # the same command

A row is a recipe ('fp', or a sysq recipe run by its real kernel: RECIPE+real) in a mode (eager or
compiled); ROW+fused (fp+fused, w8a16+fused, ...) first stacks the linears that share an input (q/k/v,
gate/up: sysq.quant.fuse) so decode runs one GEMV per group, and runs attention through sysq.attention's
`sysq_decode` (one kernel per layer for a decode step where the kernel runs: CUDA) with a static cache whose
layers share one length counter (sysq.attention.static_cache); its 'x fp' is against
fp+fused when that row ran. The plain 'fp' row is transformers' own path as users run it. Per row, in this
process or (--isolate, the CPU default) in a fresh subprocess so that its
resident memory is its own:
  prefill   B x T tokens, one forward, logits for the last token only (what serving computes), tokens/s
  decode1   batch 1, static KV cache, greedy, --new tokens after a --prompt-token prompt: tokens/s
  decodeB   the same at batch --batch
  memory    weights in memory (parameters + buffers, sysq.quant.model_bytes); GPU: peak allocated per
            phase (torch.cuda.max_memory_allocated); CPU: resident memory of the process after setup and
            after decoding (VmRSS; freed heap returned with malloc_trim) and its peak (VmHWM)
  kernels   the ops that took the time in one decode step / one prefill (torch.profiler, self time)
  --kernel-table   every device kernel of --profile-steps compiled decode steps (CUDA graphs included):
            calls and us per step per kernel name, grouped into GEMV/GEMM, attention and the rest
Compiled: prefill compiles each decoder layer once (regional compilation: the layers share one graph, so
compile time does not grow with depth); decode compiles the whole forward with --decode-mode
(reduce-overhead = CUDA graphs on the GPU). Compile time is the first calls' wall time, reported apart.
Timings: warm-up calls, then the median of --reps calls (prefill, torch.cuda.synchronize around each). Decode
times --new steps twice: each step synced (the median; host time between kernels shows) and --new steps back to
back with one synchronize at the end (as serving and gpt-fast run it: the host prepares step i+1 while the GPU
runs step i; token and position stay on the device). --decode-timing picks which gives tok/s and the ratios
(default: loop on CUDA, step on the CPU); on CUDA the table shows both. Ratios are to the 'fp' row of the same
mode in the same run. --rounds N runs every row N times, in turn: tok/s is then the median over the rounds and a
ratio the median of the rounds' ratios, so a slow spell of a shared machine moves one round, not a row.

Models: a sysq spec (alias, folder) with its real weights, or config:NAME for random weights built from a
config on the device (config:llama3-8b, config:smollm2, config:tiny); random weights are fine for speed.
Writes OUT/bench.json and OUT/bench.md (OUT: --out, else $OUT, else out/bench-generate).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import ctypes
import gc
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import torch

import sysq
from sysq import attention, get_adapter
from sysq.io import atomic_write_text
from sysq.quant import model_bytes, quantize
from sysq.quant import convert, fuse
from sysq.quant.api import own_memory, scheme_of

REPO = Path(__file__).resolve().parents[1]

CONFIGS = {   # transformers configs of the shapes we bench (random weights)
    "llama3-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0,
                      max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=False,
                      bos_token_id=128000, eos_token_id=128001),
    "smollm2": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, rope_theta=100000.0,
                    max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True,
                    bos_token_id=1, eos_token_id=2),
    "tiny": dict(model_type="llama", hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=512, max_position_embeddings=512,
                 tie_word_embeddings=True, bos_token_id=1, eos_token_id=2),
}
RECIPES = ["fp", "w8a16", "w4a16", "w8a8", "w8a8-static", "w8a8-fp8", "w8a8-fp8-static"]
# the goals: (phase, mode, recipe, ratio to fp of the same mode and phase)
GOALS = {
    "cuda": [("prefill", "compiled", "w8a8-fp8-static", 1.6), ("prefill", "compiled", "w8a8-fp8", 1.5),
             ("prefill", "compiled", "w8a8", 1.3), ("prefill", "compiled", "w8a8-static", 1.3),
             ("decode1", "compiled", "w4a16", 2.5), ("decode1", "compiled", "w8a16", 1.8)],
    "cpu": [("decode1", "eager", "w8a16", 1.3), ("decode1", "eager", "w4a16", 1.3),
            ("decode1", "compiled", "w8a16", 1.3), ("decode1", "compiled", "w4a16", 1.3)],
}


TIMING = {"loop": "--new steps back to back, one synchronize at the end (loop)",
          "step": "median of single steps, each synchronized (step)"}


# ---- memory --------------------------------------------------------------------------------------

def _status(field: str) -> float:
    """MiB of a /proc/self/status field (VmRSS: resident now, VmHWM: peak resident)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def release_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    elif platform.system() == "Linux":
        try:   # hand freed heap back to the OS, so VmRSS is what the process still holds
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass


# ---- model ---------------------------------------------------------------------------------------

def build(spec: str, device: str, dtype: torch.dtype, seed: int = 0):
    """(model, tokenizer or None) on the device, eval mode."""
    if spec.startswith("config:"):
        from transformers import AutoConfig, AutoModelForCausalLM
        name = spec.split(":", 1)[1]
        if name not in CONFIGS:
            raise sysq.SysqError(f"unknown config {name!r}; known: {', '.join(CONFIGS)}")
        kw = dict(CONFIGS[name])
        cfg = AutoConfig.for_model(kw.pop("model_type"), **kw)
        torch.manual_seed(seed)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
        return model.eval(), None
    model, tok = sysq.load(spec, dtype=str(dtype).replace("torch.", ""), device=device)
    return model, tok


def calibration(tok, model, device: str):
    if tok is not None:
        try:
            return sysq.calibration(tok, n=4, seqlen=256, seed=0)
        except sysq.SysqError as e:    # no WikiText-2 on this machine: random tokens set the static scales
            print(f"calibration: {str(e).splitlines()[0][:160]}; random tokens instead (speed is the same)",
                  flush=True)
    g = torch.Generator().manual_seed(0)
    return torch.randint(3, model.config.vocab_size, (2, 128), generator=g)


def forward_kwargs(model, cache, pos: torch.Tensor) -> dict:
    """The cache and position arguments under this transformers' names (5.17 past_key_values / cache_position,
    5.2x cache)."""
    params = inspect.signature(model.forward).parameters
    kw = {"cache" if "cache" in params else "past_key_values": cache, "position_ids": pos, "use_cache": True}
    if "cache_position" in params:
        kw["cache_position"] = pos[0]
    return kw


def static_cache(model, max_len: int):
    from transformers import StaticCache
    try:
        return StaticCache(config=model.config, max_cache_len=max_len)
    except TypeError:   # older signatures want the batch size, device and dtype up front
        p = next(model.parameters())
        return StaticCache(config=model.config, max_batch_size=1, max_cache_len=max_len, device=p.device,
                           dtype=p.dtype)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


# ---- phases --------------------------------------------------------------------------------------

def compile_layers(model, mode: str | None) -> None:
    """Regional compilation: every decoder layer compiled with one shared graph."""
    for layer in get_adapter(model).layers():
        layer.compile(mode=mode, dynamic=False)


def uncompile_layers(model) -> None:
    for layer in get_adapter(model).layers():
        layer._compiled_call_impl = None


@torch.no_grad()
def prefill(model, args, device: str, compiled: bool) -> dict:
    g = torch.Generator().manual_seed(1)
    b, t = args.prefill
    ids = torch.randint(3, model.config.vocab_size, (b, t), generator=g).to(device)
    if compiled:
        compile_layers(model, args.prefill_mode)

    def run():
        return model(input_ids=ids, use_cache=False, logits_to_keep=1).logits
    first, _ = timed(run, device)          # compiles when compiled
    for _ in range(args.warmup - 1):
        timed(run, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = [timed(run, device)[0] for _ in range(args.reps)]
    med = statistics.median(times)
    res = dict(ms=med * 1e3, tokens_per_s=b * t / med, first_call_s=first, shape=f"{b}x{t}", reps=args.reps)
    if device == "cuda":
        res["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    if args.profile:
        res["kernels"] = kernels(run, device, args.top)
    if compiled:
        uncompile_layers(model)
    return res


@torch.no_grad()
def decode(model, args, device: str, compiled: bool, batch: int) -> dict:
    g = torch.Generator().manual_seed(2)
    p, n, warm = args.prompt, args.new, args.warmup + 2
    max_len = p + warm + 2 * n + 2 + (args.profile_steps if args.kernel_table else 0)
    # the sysq decode path (ROW+fused) also shares one length counter across the cache's layers
    cache = attention.static_cache(model, max_len) if model.config._attn_implementation == attention.NAME \
        else static_cache(model, max_len)
    ids = torch.randint(3, model.config.vocab_size, (batch, p), generator=g).to(device)
    pos = torch.arange(p, device=device).unsqueeze(0).expand(batch, -1)
    logits = model(input_ids=ids, logits_to_keep=1, **forward_kwargs(model, cache, pos)).logits   # eager prefill
    tok = logits[:, -1].argmax(-1, keepdim=True)
    fwd = model.forward
    if compiled:
        fwd = torch.compile(model.forward, mode=args.decode_mode, dynamic=False)

    # the token and its position stay on the device: no host read (.item()) in the loop, so host work of step
    # i+1 overlaps the GPU's step i as in serving
    state = {"tok": tok, "pos": torch.full((batch, 1), p, dtype=torch.long, device=device)}

    def step():
        out = fwd(input_ids=state["tok"], logits_to_keep=1, **forward_kwargs(model, cache, state["pos"])).logits
        state["tok"] = out[:, -1].argmax(-1, keepdim=True).clone()
        state["pos"] = state["pos"] + 1
        return state["tok"]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    import torch._inductor.config as ic
    from sysq.quant.kernels import Int8WOLinear
    # a batch-1 dequantize-matmul (int8 weight-only on CUDA without the Triton GEMV) becomes a fused reduction that
    # reaches bandwidth only with coordinate descent tuning (gpt-fast); the other rows' matmuls are library or
    # sysq kernels, so it would only add compile time there
    tune = compiled and device == "cuda" and any(isinstance(m, Int8WOLinear) and not (batch <= 16 and m.gemv)
                                                 for m in model.modules())
    graphs = CudaGraphWatch() if compiled and device == "cuda" and "reduce-overhead" in str(args.decode_mode) else None
    with ic.patch(coordinate_descent_tuning=tune):
        first = sum(timed(step, device)[0] for _ in range(warm))   # compiles (and records graphs) when compiled
    synced = statistics.median([timed(step, device)[0] for _ in range(n)])      # each step synced: host time exposed
    loop, _ = timed(lambda: [step() for _ in range(n)], device)                # back to back, one sync at the end
    loop /= n
    per_step = loop if args.decode_timing == "loop" else synced
    res = dict(ms_per_step=per_step * 1e3, tokens_per_s=batch / per_step, timing=args.decode_timing,
               ms_per_step_loop=loop * 1e3, tokens_per_s_loop=batch / loop,
               ms_per_step_synced=synced * 1e3, tokens_per_s_synced=batch / synced,
               first_calls_s=first, batch=batch, prompt=p, new=n)
    if graphs is not None:
        res["cudagraphs"] = graphs.report()
        print(f"cuda graphs ({batch=}): {res['cudagraphs']}", flush=True)
    if device == "cuda":
        res["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    if args.profile:
        res["kernels"] = kernels(step, device, args.top)
    if args.kernel_table:
        res["kernel_table"] = kernel_table(step, device, args.profile_steps)
        print(format_kernel_table(res["kernel_table"], f"{args._label} decode batch {batch}", res["ms_per_step"]),
              flush=True)
    return res


class CudaGraphWatch:
    """Did torch.compile's reduce-overhead actually run the decode step as CUDA graphs? Inductor skips them
    silently (a CPU tensor, a mutated input, dynamic shapes...): counts its skips and the reasons it logs, and
    the graphs its cudagraph tree manager recorded."""

    LOGGER = "torch._inductor.cudagraph_utils.__cudagraphs"

    def __init__(self):
        import logging
        from torch._dynamo.utils import counters
        self.skips0 = int(counters["inductor"]["cudagraph_skips"])
        self.reasons: list[str] = []
        watch = self

        class Keep(logging.Handler):
            def emit(self, record):
                watch.reasons.append(record.getMessage()[:200])
        self.handler = Keep(level=logging.WARNING)
        logging.getLogger(self.LOGGER).addHandler(self.handler)

    def report(self) -> dict:
        import logging
        from torch._dynamo.utils import counters
        logging.getLogger(self.LOGGER).removeHandler(self.handler)
        out = dict(skips=int(counters["inductor"]["cudagraph_skips"]) - self.skips0, reasons=self.reasons[:5])
        try:
            from torch._inductor.cudagraph_trees import get_manager
            mgr = get_manager(torch.cuda.current_device(), create_if_none_exists=False)

            def count(nodes):
                return sum(1 + sum(count(c) for c in node.children.values()) for node in nodes)
            out["graphs_recorded"] = 0 if mgr is None or mgr.roots is None else \
                sum(count(nodes) for nodes in mgr.roots.values())
        except Exception as e:   # private API: say so rather than fail the row
            out["graphs_recorded"] = f"unknown ({type(e).__name__}: {str(e)[:80]})"
        out["ok"] = out["skips"] == 0 and isinstance(out["graphs_recorded"], int) and out["graphs_recorded"] > 0
        return out


def kernels(fn, device: str, top: int) -> list[dict]:
    """The ops with the most self time in one call of fn (device kernels on CUDA, ATen ops on the CPU)."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as prof:
        fn()
        sync(device)
    evs = prof.key_averages()

    def self_us(e):
        if device == "cuda":
            return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        return e.self_cpu_time_total
    total = sum(self_us(e) for e in evs) or 1.0
    evs = sorted(evs, key=self_us, reverse=True)[:top]
    return [dict(name=e.key[:90], ms=self_us(e) / 1e3, share=self_us(e) / total, calls=e.count) for e in evs]


KERNEL_CLASSES = (("attention", ("flash", "attention", "sdpa", "fmha", "_decode_kernel")),     # first: fmha names say cutlass too
                  ("GEMV/GEMM", ("gemv", "gemm", "nvjet", "int4pack", "int8pack", "_int8_kernel", "_int4_kernel", "_int4_fma_kernel",
                                 "cutlass", "matmul", "aten::mm", "addmm", "splitk", "tinygemm")))


def kernel_class(name: str) -> str:
    low = name.lower()
    return next((cls for cls, keys in KERNEL_CLASSES if any(k in low for k in keys)), "other")


def kernel_table(fn, device: str, steps: int) -> dict:
    """Every device kernel (CUDA; ops by self time on the CPU) of `steps` calls of fn under torch.profiler:
    per name, calls and microseconds per step. Inside a CUDA graph replay the profiler still sees each kernel."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    sync(device)
    with profile(activities=acts) as prof:
        for _ in range(steps):
            fn()
        sync(device)
    agg: dict[str, list] = {}
    for e in prof.events():
        if device == "cuda":
            if e.device_type != DeviceType.CUDA:
                continue
            us = e.time_range.elapsed_us()
        else:                     # the CPU runs the ops itself: their self time
            if e.device_type != DeviceType.CPU:
                continue
            us = e.self_cpu_time_total
        a = agg.setdefault(e.name, [0, 0.0])
        a[0] += 1
        a[1] += us
    rows = sorted(({"name": k, "class": kernel_class(k), "calls": c / steps, "us": t / steps}
                   for k, (c, t) in agg.items()), key=lambda r: -r["us"])
    by_class = {}
    for r in rows:
        c = by_class.setdefault(r["class"], {"calls": 0.0, "us": 0.0})
        c["calls"] += r["calls"]
        c["us"] += r["us"]
    return dict(steps=steps, kernels=rows, classes=by_class, calls=sum(r["calls"] for r in rows),
                us=sum(r["us"] for r in rows))


def format_kernel_table(t: dict, title: str, ms_per_step: float | None = None) -> str:
    if not t["kernels"]:
        return f"kernel table, {title}: no device kernels recorded (rerun with --decode-mode default, no CUDA graphs)"
    wall = f", step {ms_per_step * 1e3:.0f} us measured" if ms_per_step else ""
    lines = [f"kernel table, {title}: {t['calls']:.0f} kernels, {t['us']:.0f} us of kernel time per step{wall} "
             f"(mean of {t['steps']} steps)",
             "  " + "; ".join(f"{c}: {v['calls']:.0f} kernels {v['us']:.0f} us" for c, v in
                              sorted(t["classes"].items(), key=lambda kv: -kv[1]["us"])),
             f"  {'us/step':>9} {'share':>6} {'calls':>6} {'us/call':>8}  class      kernel"]
    for r in t["kernels"]:
        lines.append(f"  {r['us']:9.1f} {r['us'] / (t['us'] or 1):6.1%} {r['calls']:6.1f} "
                     f"{r['us'] / max(r['calls'], 1e-9):8.2f}  {r['class']:10s} {r['name'][:110]}")
    return "\n".join(lines)


# ---- each kernel against its simulated twin, on this device -------------------------------------------

@torch.no_grad()
def kernel_checks(device: str, dtype: torch.dtype, recipes) -> list[dict]:
    """Every real module against its simulated twin on random inputs, here: ||real - twin|| / ||twin||, with the
    twin in float32 on the same input (the bound a test would assert: fp32 rounding for the exact paths, bf16
    roundings where the kernel runs in bf16)."""
    from sysq.quant import QuantLinear
    from sysq.quant.kernels import MODULES
    from sysq.quant.recipes import real_backend
    out = []
    g = torch.Generator().manual_seed(0)

    def twin(r, lin, x):
        ql = QuantLinear(lin, r.weight, r.act, "check", r.ragged)
        ql.start_calibration()
        ql(x)
        ql.finish_calibration()
        ql.quantize_weight()
        return ql
    names = [r for r in recipes if r != "fp"]
    for name in [n for n in dict.fromkeys(n.removesuffix("+fused") for n in names) if n != "fp"]:
        r = sysq.get_recipe(name)
        try:
            lin = torch.nn.Linear(512, 256, bias=False).to(device)
            x = (torch.randn(4, 16, 512, generator=g) * torch.linspace(0.1, 8, 512)).to(device)
            ql = twin(r, lin, x)
            real = MODULES[real_backend(r.weight, r.act)](ql)
            xd = x.to(dtype)
            twin_y, got = ql(xd.float()), real(xd).float()
            x1 = xd[:1, :1]     # one token: the decode path (GEMV where the module has one)
            twin1, got1 = ql(x1.float()), real(x1).float()
            res = dict(recipe=name, kernel=real.kernel, rel_err=float((got - twin_y).norm() / twin_y.norm()),
                       rel_err_1row=float((got1 - twin1).norm() / twin1.norm()))
            if name + "+fused" in names:   # a q/k/v-like group: the fused module's columns against each member's
                qls = [twin(r, torch.nn.Linear(512, n, bias=False).to(device), x) for n in (256, 128, 128)]
                whole = MODULES[real_backend(r.weight, r.act)](fuse.concatenate(qls, ["q", "k", "v"]))
                sep = torch.cat([MODULES[real_backend(r.weight, r.act)](q)(x1) for q in qls], -1).float()
                res["fused_max_diff_1row"] = float((whole(x1).float() - sep).abs().max() / sep.abs().max())
            out.append(res)
        except Exception as e:
            out.append(dict(recipe=name, error=f"{type(e).__name__}: {str(e)[:200]}"))
    return out


# ---- one row ---------------------------------------------------------------------------------------

def run_row(args, recipe: str, mode: str) -> dict:
    device, dtype = args.device, getattr(torch, args.dtype)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model, tok = args._base if args._base is not None else build(args.model, device, dtype)
    base, fused = recipe.removesuffix("+fused"), recipe.endswith("+fused")
    if args._base is not None and (base != "fp" or fused):
        model = copy.deepcopy(model)
    if base != "fp":
        r = sysq.get_recipe(base + "+real")
        if args.lm_head:
            r = sysq.get_recipe({**r.to_dict(), "quantize_lm_head": True})
        if fused:   # the same codes, simulated first, then fused and converted to the real kernels
            quantize(model, dataclasses.replace(r, backend="fake"), calibration(tok, model, device), quiet=True)
            convert(model, r.backend, fuse=True)
        else:
            quantize(model, r, calibration(tok, model, device), quiet=True)
    else:
        if fused:
            fuse.fuse_projections(model)
        own_memory(model)     # as convert() does for the quantized rows: the weights in the process's own memory
    if fused:     # the sysq decode path: one attention kernel per layer (sdpa where the kernel does not run)
        attention.enable(model)
    ad = get_adapter(model)
    schemes = dict(Counter(scheme_of(ref.module) for ref in ad.linear_refs() + [ad.lm_head_ref()]))
    release_memory(device)
    row = dict(recipe=recipe, mode=mode, schemes=schemes, fused_groups=fuse.describe(model),
               weights_mib=model_bytes(model) / 2**20, setup_s=time.perf_counter() - t0)
    row["attention"] = model.config._attn_implementation
    print(f"{recipe} {mode}: modules {schemes}" + (f"; fused groups {row['fused_groups']}" if fused else "")
          + f"; attention {row['attention']}" + (" (its kernel runs here)" if fused and attention.available(device)
                                                   else ""),
          flush=True)
    if device == "cpu":
        row["rss_setup_mib"] = _status("VmRSS")
    compiled = mode == "compiled"
    args._label = f"{recipe} {mode}"
    for phase in args.phases:
        try:
            if phase == "prefill":
                row[phase] = prefill(model, args, device, compiled)
            else:
                row[phase] = decode(model, args, device, compiled, 1 if phase == "decode1" else args.batch)
        except Exception as e:    # one failing phase must not lose the others
            row[phase] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        if compiled:
            torch._dynamo.reset()
        release_memory(device)
    if device == "cpu":
        row["rss_after_mib"], row["rss_peak_mib"] = _status("VmRSS"), _status("VmHWM")
    del model
    release_memory(device)
    return row


def isolated(args, recipe: str, mode: str) -> dict:
    """The row in a fresh interpreter: its resident memory is its own."""
    out = Path(args.out) / f".row-{recipe}-{mode}.json"
    cmd = [sys.executable, "-m", "evaluation.bench", "--_row", f"{recipe}:{mode}", "--_json", str(out)] + args._argv
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    if proc.returncode != 0 or not out.exists():
        return dict(recipe=recipe, mode=mode, error=(proc.stderr or proc.stdout)[-500:])
    row = json.loads(out.read_text())
    out.unlink()
    return row


# ---- report --------------------------------------------------------------------------------------

def round_ratios(rows, phase, mode, recipe, base="fp") -> list[float]:
    """tokens/s of recipe over base's (same mode and phase), one per round both rows ran in."""
    get = {(r["recipe"], r["mode"], r.get("round", 0)): r for r in rows}
    out = []
    for rnd in sorted({r.get("round", 0) for r in rows}):
        a = get.get((recipe, mode, rnd), {}).get(phase, {})
        b = get.get((base, mode, rnd), {}).get(phase, {})
        if "tokens_per_s" in a and "tokens_per_s" in b:
            out.append(a["tokens_per_s"] / b["tokens_per_s"])
    return out


def ratio(rows, phase, mode, recipe, base="fp"):
    """The median over rounds of recipe's tokens/s over base's: each ratio from rows run minutes apart at most,
    so a slow spell of a shared machine moves one round, not the result."""
    xs = round_ratios(rows, phase, mode, recipe, base)
    return statistics.median(xs) if xs else None


def merged_rows(rows) -> list[dict]:
    """One row per (recipe, mode): tokens/s and resident memory the median over its rounds (--rounds)."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["recipe"], r["mode"]), []).append(r)
    out = []
    for rs in groups.values():
        ok = [r for r in rs if "error" not in r]
        if len(rs) == 1 or not ok:
            out.append(rs[0])
            continue
        m = copy.deepcopy(ok[0])
        for k in ("rss_setup_mib", "rss_after_mib", "rss_peak_mib"):
            if all(k in r for r in ok):
                m[k] = statistics.median(r[k] for r in ok)
        for ph, p in m.items():
            if isinstance(p, dict) and "tokens_per_s" in p:
                xs = [r[ph]["tokens_per_s"] for r in ok if "tokens_per_s" in r.get(ph, {})]
                p["tokens_per_s"], p["rounds_tokens_per_s"] = statistics.median(xs), xs
        m["rounds"] = len(ok)
        out.append(m)
    return out


def table(all_rows, settings, device) -> str:
    phases = settings["phases"]
    rows = merged_rows(all_rows)
    head = ["recipe", "mode", "weights MiB"]
    for ph in phases:
        head += [f"{ph} tok/s", f"{ph} x fp"] + ([f"{ph} peak MiB"] if device == "cuda" else [])
        if device == "cuda" and ph != "prefill":
            head += [f"{ph} tok/s, other timing"]
    if device == "cpu":
        head += ["RSS setup MiB", "RSS after MiB", "RSS peak MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['recipe']} | {r['mode']} | error: {r['error'][-160:]!r} |")
            continue
        cells = [r["recipe"], r["mode"], f"{r['weights_mib']:.1f}"]
        for ph in phases:
            p = r.get(ph, {})
            if "tokens_per_s" in p:
                x = ratio(all_rows, ph, r["mode"], r["recipe"])
                xf = ratio(all_rows, ph, r["mode"], r["recipe"], "fp+fused") if r["recipe"].endswith("+fused") else None
                cells += [f"{p['tokens_per_s']:.1f}", (f"{x:.2f}" if x else "–") + (f" ({xf:.2f} vs fp+fused)"
                                                                                       if xf else "")]
            else:
                cells += [("error" if "error" in p else "skipped"), "–"]
            if device == "cuda":
                cells.append(f"{p['peak_mib']:.0f}" if "peak_mib" in p else "–")
                if ph != "prefill":
                    other = "synced" if p.get("timing") == "loop" else "loop"
                    cells.append(f"{p[f'tokens_per_s_{other}']:.1f} ({other})" if f"tokens_per_s_{other}" in p else "–")
        if device == "cpu":
            cells += [f"{r.get('rss_setup_mib', float('nan')):.0f}", f"{r.get('rss_after_mib', float('nan')):.0f}",
                      f"{r.get('rss_peak_mib', float('nan')):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    checks = settings.get("kernel_checks", [])
    out = ["# sysq bench", "", "Settings: " + json.dumps({k: v for k, v in settings.items() if k != "kernel_checks"}),
           "", "Each real module against its simulated twin on this device (random 512 -> 256 linear, "
           "||real - twin|| / ||twin||): " + "; ".join(
               f"{c['recipe']} {c['rel_err']:.1e} (1 row {c['rel_err_1row']:.1e}"
               + (f", fused vs separate {c['fused_max_diff_1row']:.1e}" if "fused_max_diff_1row" in c else "") + ")"
               if "error" not in c
               else f"{c['recipe']} ERROR" for c in checks),
           ""] + lines + ["", "## Goals", ""]
    if any(ph != "prefill" for ph in phases):
        out += [f"Decode tok/s and ratios: {TIMING[settings.get('decode_timing', 'step')]}.", ""]
    rounds = len({r.get("round", 0) for r in all_rows})
    if rounds > 1:
        out += [f"{rounds} rounds (every row once per round, in turn): tok/s is the median over the rounds, a "
                "ratio the median of the rounds' ratios (each round's in brackets).", ""]

    def goal_line(what, xs, goal):
        x = statistics.median(xs)
        each = f" (rounds {', '.join(f'{v:.2f}' for v in xs)})" if len(xs) > 1 else ""
        return f"- {what}: {x:.2f}x{each} (goal >= {goal}: {'met' if x >= goal else 'missed'})"
    for phase, mode, recipe, goal in GOALS.get(device, []):
        xs = round_ratios(all_rows, phase, mode, recipe)
        if xs:
            out.append(goal_line(f"{phase} {mode} {recipe}+real / fp", xs, goal))
        for against in ("fp", "fp+fused"):     # fused rows: against unfused and against fused float
            xs = round_ratios(all_rows, phase, mode, recipe + "+fused", against)
            if xs:
                out.append(goal_line(f"{phase} {mode} {recipe}+fused / {against}", xs, goal))
    if device == "cpu":
        fp = {r["mode"]: r.get("rss_after_mib") for r in rows if r["recipe"] == "fp" and "error" not in r}
        for r in rows:
            if r["recipe"] in ("w8a16", "w4a16") and "error" not in r and fp.get(r["mode"]):
                below = r["rss_after_mib"] < fp[r["mode"]]
                out.append(f"- resident memory {r['recipe']}+real {r['mode']}: {r['rss_after_mib']:.0f} MiB vs fp "
                           f"{fp[r['mode']]:.0f} MiB ({'below' if below else 'NOT below'})")
    out += ["", "## Kernels (self time, one call)", ""]
    for r in rows:
        for ph in phases:
            ks = r.get(ph, {}).get("kernels")
            if ks:
                out.append(f"- {r['recipe']} {r['mode']} {ph}: " + "; ".join(
                    f"{k['name']} {k['ms']:.2f} ms ({k['share']:.0%}, x{k['calls']})" for k in ks))
        for ph in phases:
            kt = r.get(ph, {}).get("kernel_table")
            if kt:
                out += ["", "```", format_kernel_table(kt, f"{r['recipe']} {r['mode']} {ph}", r[ph].get("ms_per_step")),
                        "```", ""]
        for ph in phases:
            cg = r.get(ph, {}).get("cudagraphs")
            if cg:
                out.append(f"- {r['recipe']} {r['mode']} {ph}: CUDA graphs {'ran' if cg['ok'] else 'NOT all ran'} "
                           f"(recorded {cg['graphs_recorded']}, skips {cg['skips']}"
                           + (f": {'; '.join(cg['reasons'])}" if cg["reasons"] else "") + ")")
        for ph in phases:
            if "error" in r.get(ph, {}):
                out.append(f"- {r['recipe']} {r['mode']} {ph}: ERROR {r[ph]['error']}")
    return "\n".join(out) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="sysq spec or config:NAME (%s)" % ", ".join(CONFIGS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="default: float32 on the CPU, bfloat16 on CUDA")
    p.add_argument("--rows", default=",".join(RECIPES), help="recipes ('fp' = float); each runs RECIPE+real")
    p.add_argument("--modes", default="eager,compiled")
    p.add_argument("--phases", default="prefill,decode1,decodeB")
    p.add_argument("--prefill", default=None, help="BxT (default: 1x512 CPU, 8x2048 CUDA)")
    p.add_argument("--prompt", type=int, default=64, help="prompt tokens before decoding")
    p.add_argument("--new", type=int, default=32, help="timed decode steps")
    p.add_argument("--batch", type=int, default=8, help="batch of the decodeB phase")
    p.add_argument("--reps", type=int, default=5, help="timed prefill calls (median)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1, help="run every row this many times, in turn; tok/s and "
                   "ratios are medians over the rounds (a shared machine's slow spells hit one round, not a row)")
    p.add_argument("--prefill-mode", default=None, help="torch.compile mode of the compiled prefill (default on CUDA: "
                   "max-autotune-no-cudagraphs, whose Triton int8 GEMM templates beat _int_mm's sm80 cutlass kernel "
                   "on Hopper; 'default' for inductor's default; on the CPU inductor's default)")
    p.add_argument("--decode-mode", default=None, help="torch.compile mode of the compiled decode (default: "
                   "reduce-overhead on CUDA, inductor's default on the CPU)")
    p.add_argument("--decode-timing", choices=["loop", "step"], default=None, help="decode tok/s from --new steps "
                   "back to back, one sync at the end (loop; CUDA default) or the median of synced steps (step; CPU "
                   "default); both are recorded")
    p.add_argument("--lm-head", action="store_true", help="quantize lm_head too (torchao's quantize_ does)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--isolate", choices=["auto", "yes", "no"], default="auto", help="one subprocess per row "
                   "(auto: on the CPU, where resident memory is measured)")
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--top", type=int, default=5, help="kernels listed per row and phase")
    p.add_argument("--kernel-table", action="store_true", help="profile --profile-steps decode steps after the timed "
                   "ones and print every kernel (calls, us per step), grouped into GEMV/GEMM, attention, other")
    p.add_argument("--profile-steps", type=int, default=5, help="decode steps the kernel table averages")
    p.add_argument("--time-budget", type=float, default=None, help="seconds; rows not started by then are skipped "
                   "(keeps a GPU call inside its limit)")
    p.add_argument("--out", default=None, help="folder for bench.json / bench.md (default: $OUT, else out/bench)")
    p.add_argument("--_row", help=argparse.SUPPRESS)
    p.add_argument("--_json", help=argparse.SUPPRESS)


def finish(args, argv) -> argparse.Namespace:
    """Defaults that depend on the device; the arguments a child row is started with."""
    args._argv = [a for a in argv if a not in ("--quiet", "--verbose")]
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    b, t = (args.prefill or ("8x2048" if args.device == "cuda" else "1x512")).lower().split("x")
    args.prefill = (int(b), int(t))
    args.phases = [x for x in args.phases.split(",") if x] if isinstance(args.phases, str) else args.phases
    args.decode_timing = args.decode_timing or ("loop" if args.device == "cuda" else "step")
    args.decode_mode = args.decode_mode or ("reduce-overhead" if args.device == "cuda" else None)
    if args.prefill_mode is None and args.device == "cuda":
        args.prefill_mode = "max-autotune-no-cudagraphs"
    elif args.prefill_mode == "default":
        args.prefill_mode = None
    args.out = args.out or os.environ.get("OUT") or "out/bench"
    if args.rounds < 1:
        raise SystemExit(f"--rounds must be 1 or more (got {args.rounds})")
    args._base = None
    return args


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    add_arguments(p)
    argv = list(sys.argv[1:] if argv is None else argv)
    return finish(p.parse_args(argv), argv)


def main(argv=None) -> int:
    return run(parse(argv))


def run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision("high")
    if args._row:   # a child of --isolate: one row, JSON out
        recipe, mode = args._row.split(":")
        row = run_row(args, recipe, mode)
        Path(args._json).write_text(json.dumps(row))
        return 0
    Path(args.out).mkdir(parents=True, exist_ok=True)
    isolate = args.isolate == "yes" or (args.isolate == "auto" and args.device == "cpu")
    import transformers
    settings = dict(model=args.model, device=args.device, dtype=args.dtype, phases=args.phases,
                    prefill=f"{args.prefill[0]}x{args.prefill[1]}", prompt=args.prompt, new=args.new,
                    batch=args.batch, reps=args.reps, warmup=args.warmup, rounds=args.rounds,
                    prefill_mode=args.prefill_mode,
                    decode_mode=args.decode_mode, decode_timing=args.decode_timing,
                    lm_head_quantized=args.lm_head, isolate=isolate,
                    threads=torch.get_num_threads(), torch=torch.__version__, transformers=transformers.__version__,
                    gpu=torch.cuda.get_device_name() if args.device == "cuda" else None, cpu=platform.processor())
    print("settings:", json.dumps(settings), flush=True)
    if any(ph != "prefill" for ph in args.phases):
        print(f"decode tok/s and ratios: {TIMING[args.decode_timing]}", flush=True)
    checks = kernel_checks(args.device, getattr(torch, args.dtype), args.rows.split(","))
    for c in checks:
        print(f"kernel check {c['recipe']:16s} " + (f"{c['kernel']}: |real - twin| / |twin| = {c['rel_err']:.2e}, "
                                                    f"1 row {c['rel_err_1row']:.2e}" + (
                                                        f"; fused q/k/v vs separate, 1 row: max diff / max "
                                                        f"{c['fused_max_diff_1row']:.2e}"
                                                        if "fused_max_diff_1row" in c else "")
                                                    if "error" not in c else f"ERROR {c['error']}"), flush=True)
    settings["kernel_checks"] = checks
    if not isolate:
        args._base = build(args.model, args.device, getattr(torch, args.dtype))
    rows, start = [], time.perf_counter()
    todo = [(rnd, mode, recipe) for rnd in range(args.rounds) for mode in [m for m in args.modes.split(",") if m]
            for recipe in [r for r in args.rows.split(",") if r]]
    for rnd, mode, recipe in todo:
        if args.time_budget and time.perf_counter() - start > args.time_budget:
            rows.append(dict(recipe=recipe, mode=mode, round=rnd, error="skipped: time budget spent"))
            continue
        t = time.perf_counter()
        try:
            row = isolated(args, recipe, mode) if isolate else run_row(args, recipe, mode)
        except Exception as e:
            row = dict(recipe=recipe, mode=mode, error=f"{type(e).__name__}: {str(e)[:300]}")
        row["wall_s"], row["round"] = time.perf_counter() - t, rnd
        rows.append(row)
        brief = {ph: round(row[ph]["tokens_per_s"], 1) for ph in args.phases if "tokens_per_s" in row.get(ph, {})}
        tag = "" if args.rounds == 1 else f"round {rnd + 1} "
        print(f"{recipe:16s} {mode:8s} {tag}{row['wall_s']:6.1f}s  tok/s {brief}  "
              f"{row.get('error', '') or [row[ph]['error'] for ph in args.phases if 'error' in row.get(ph, {})] or ''}",
              flush=True)
        atomic_write_text(Path(args.out) / "bench.json", json.dumps(dict(settings=settings, rows=rows), indent=1))
        atomic_write_text(Path(args.out) / "bench.md", table(rows, settings, args.device))
    print(table(rows, settings, args.device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
