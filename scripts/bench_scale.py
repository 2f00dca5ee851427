"""Scale benchmark: time and peak GPU / host memory of each sysq step on a Llama-shaped model, random weights.

    python scripts/bench_scale.py --config tiny --device cpu                       # any machine, seconds
    python scripts/bench_scale.py --config 8b                                      # one GPU: the default steps
    python scripts/bench_scale.py --config 70b --layers 4 --steps seq-detect,mitigate,static,gptq
    python scripts/bench_scale.py --config 8b --gpus 2 --steps split-detect,split-mitigate,split-static,split-gptq,split-ppl
    python scripts/bench_scale.py --config 8b --steps profile --windows 4          # where detect's time goes

Models: Llama-3 shapes (1b, 8b, 70b; tiny for tests), bf16 on a GPU (float32 on the CPU), random weights
N(0, 0.02) drawn on the device, with one systematic outlier planted (DESIGN.md section 7): the BOS embedding
alone carries channel C_IN, one MLP unit of layer 1 reads it and its down_proj column writes residual channel
D, so BOS carries a massive value in D from layer 1 on. --layers N builds a slice of N decoder layers; the
sequential steps' per-layer time is extrapolated to the full depth. Calibration: --windows random windows of
--seqlen tokens with BOS first.

Steps (in this order; --steps picks some):
  forward       plain forward of the windows, the whole model on the GPU, logits included (median of --reps)
  detect        sysq.detect in memory on the GPU (median of --reps), each run right after a forward run (the two
                alternate); ratio to forward: of the medians, and the median of the per-pair ratios
  profile       torch.profiler table of one in-memory detect (where the time goes; copies and .item() counted)
  seq-detect    the weights on the CPU, one decoder layer at a time on the GPU (sysq.sequential)
  mitigate      plan(report, w8a8-static, auto) + mitigate, sequential
  static        quantize with the plan's recipe (w8a8-static: static activation scales), sequential
  gptq          quantize w4a16+gptq, sequential, on the float weights (not the mitigated ones)
  split-*       the model split over --gpus GPUs by accelerate (device_map), in memory: detect, mitigate (auto,
                w8a8-static), static (its recipe), perplexity of the windows (split-ppl), then w4a16+gptq on a
                fresh float model (split-gptq)
Each step: seconds, per-layer seconds (sequential steps: median layer), peak GPU memory
(torch.cuda.max_memory_allocated, the largest over the GPUs), peak host RSS (VmHWM, reset before the step).
The table goes to stdout and, after every step, to $OUT/scale-<config>.md and .json (default out/).
"""
import argparse
import gc
import json
import logging
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import sysq  # noqa: E402
from sysq import capture  # noqa: E402

LLAMA3 = dict(vocab_size=128256, bos_token_id=128000, eos_token_id=128001, rope_theta=500000.0,
              max_position_embeddings=8192, rms_norm_eps=1e-5)
CONFIGS = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, vocab_size=512, bos_token_id=1, eos_token_id=2,
                 max_position_embeddings=512),
    "1b": dict(LLAMA3, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, head_dim=64),
    "8b": dict(LLAMA3, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, head_dim=128),
    "70b": dict(LLAMA3, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                num_key_value_heads=8, head_dim=128),
}
DEFAULT_STEPS = "forward,detect,profile,seq-detect,mitigate,static,gptq"
SPLIT_STEPS = ("split-detect", "split-mitigate", "split-static", "split-ppl", "split-gptq")
C_IN, D, K, BORN = 3, 7, 10, 1          # the planted outlier (as tests/test_detect.py plants it)


# ---- the model -----------------------------------------------------------------------------------------------
@torch.no_grad()
def build(name: str, layers: int | None, device: str, dtype: torch.dtype, seed: int = 0):
    """A Llama of config `name` (a slice of `layers` decoder layers) with random weights drawn on `device`."""
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from transformers import LlamaConfig, LlamaForCausalLM

    kw = dict(CONFIGS[name])
    if layers:
        kw["num_hidden_layers"] = layers
    cfg = LlamaConfig(**kw, attn_implementation="sdpa", tie_word_embeddings=False)
    cfg.name_or_path = f"random-llama-{name}" + (f"-{layers}l" if layers else "")
    with init_empty_weights(include_buffers=False):
        model = LlamaForCausalLM(cfg)
    torch.manual_seed(seed)
    for pname, p in list(model.named_parameters()):
        t = torch.empty(p.shape, dtype=dtype, device=device)
        t.fill_(1.0) if "norm" in pname else t.normal_(0.0, 0.02)
        set_module_tensor_to_device(model, pname, device, value=t, dtype=dtype)   # else cast to the shell's float32
    model.to(device).eval()
    plant(model)
    return model


@torch.no_grad()
def plant(model) -> None:
    """BOS alone carries C_IN; in layer BORN unit K reads only C_IN and its down_proj column writes only D."""
    ad, bos = sysq.get_adapter(model), model.config.bos_token_id
    emb = ad.embeddings()[0].weight
    emb[:, [C_IN, D]] = 0
    emb[bos, C_IN] = 30.0
    for i in range(ad.num_layers):                # nothing else writes C_IN or D
        for lin in (ad.output_linear(i, "attn"), ad.down(i)):
            lin.weight[[C_IN, D]] = 0
    born = min(BORN, ad.num_layers - 1)
    for _, lin in ad.mlp_inputs(born):            # gate and up
        lin.weight[K] = 0
        # 16, not the tests' 4: at 8B widths the random layers before BORN grow BOS's residual RMS to ~2, and with 4
        # the planted value stayed near 500x the median, under the massive threshold (1000x)
        lin.weight[K, C_IN] = 16.0
    down = ad.down(born)
    down.weight[:, K] = 0
    down.weight[D, K] = 1.0


def weights(model, full_layers: int) -> dict:
    """GiB of the weights as built, of one decoder layer, of everything outside the layers, and at full depth."""
    from sysq.sequential import tensor_bytes
    ad = sysq.get_adapter(model)
    total, layer = tensor_bytes(model), tensor_bytes(ad.layers()[0])
    outside = total - layer * ad.num_layers
    return {"weights_gib": total / 2**30, "layer_gib": layer / 2**30, "outside_gib": outside / 2**30,
            "full_weights_gib": (outside + layer * full_layers) / 2**30}


def windows(cfg, n: int, seqlen: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, cfg.vocab_size, (n, seqlen), generator=g)
    ids[:, 0] = cfg.bos_token_id
    return ids


# ---- measuring ---------------------------------------------------------------------------------------------
def _sync():
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            torch.cuda.synchronize(i)


def _vm(key: str) -> int | None:
    try:
        m = re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(m.group(1)) * 1024 if m else None


class Layers(logging.Handler):
    """Collects the per-layer seconds that sysq.sequential logs at DEBUG."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.seconds: list[float] = []

    def emit(self, record):
        if record.msg.startswith("layer %d"):
            self.seconds.append(record.args[1])


class Meter:
    """Seconds, peak GPU memory (largest over the GPUs) and peak host RSS of one step."""

    def __enter__(self):
        _sync()
        for i in range(torch.cuda.device_count()):
            torch.cuda.reset_peak_memory_stats(i)
        try:                                      # resets VmHWM to the current RSS (Linux)
            Path("/proc/self/clear_refs").write_text("5")
            self.host_ok = True
        except OSError:
            self.host_ok = False
        self.layers = Layers()
        logging.getLogger("sysq.sequential").addHandler(self.layers)
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        _sync()
        self.seconds = time.perf_counter() - self.t
        logging.getLogger("sysq.sequential").removeHandler(self.layers)
        n = torch.cuda.device_count()
        self.gpu = max((torch.cuda.max_memory_allocated(i) for i in range(n)), default=None)
        self.host = _vm("VmHWM") if self.host_ok else None


class Table:
    def __init__(self, args, out: Path):
        self.args, self.out, self.rows = args, out, []
        self.settings = {"config": args.config, "layers": args.layers, "full_layers": CONFIGS[args.config][
            "num_hidden_layers"], "windows": args.windows, "seqlen": args.seqlen, "dtype": args.dtype,
            "device": args.device, "gpus": args.gpus, "torch": torch.__version__,
            "gpu_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}

    def add(self, step: str, meter: Meter, pipeline: str, **extra) -> dict:
        full, built = self.settings["full_layers"], self.args.layers or self.settings["full_layers"]
        row = {"step": step, "pipeline": pipeline, "seconds": meter.seconds,
               "gpu_peak_gib": None if meter.gpu is None else meter.gpu / 2**30,
               "host_peak_gib": None if meter.host is None else meter.host / 2**30, **extra}
        if meter.layers.seconds:
            per = statistics.median(meter.layers.seconds)
            row["per_layer_s"] = per
            if built != full:
                row["full_depth_s"] = meter.seconds - sum(meter.layers.seconds) + per * full
        self.rows.append(row)
        print(self.line(row), flush=True)
        self.write()
        return row

    @staticmethod
    def line(r: dict) -> str:
        def f(v, fmt):
            return "" if v is None else format(v, fmt)
        return (f"| {r['step']} | {r['pipeline']} | {f(r['seconds'], '.2f')} | {f(r.get('per_layer_s'), '.3f')} | "
                f"{f(r.get('full_depth_s'), '.1f')} | {f(r['gpu_peak_gib'], '.2f')} | {f(r['host_peak_gib'], '.2f')} | "
                f"{r.get('note', '')} |")

    def markdown(self) -> str:
        s = self.settings
        head = (f"config {s['config']} ({s['layers'] or s['full_layers']} of {s['full_layers']} layers), "
                f"{s['windows']} x {s['seqlen']} tokens, {s['dtype']}, device {s['device']}, gpus {s['gpus']} "
                f"({s['gpu_name']}), torch {s['torch']}")
        rows = ["| step | pipeline | s | s / layer | s at full depth | peak GPU GiB | peak host GiB | note |",
                "|---|---|---|---|---|---|---|---|"] + [self.line(r) for r in self.rows]
        return head + "\n\n" + "\n".join(rows) + "\n"

    def write(self):
        from sysq.io import atomic_write_text
        name = f"scale-{self.args.config}" + (f"-{self.args.layers}l" if self.args.layers else "") + \
               (f"-{self.args.gpus}gpu" if self.args.gpus > 1 else "")
        atomic_write_text(self.out / f"{name}.md", self.markdown())
        atomic_write_text(self.out / f"{name}.json", json.dumps({"settings": self.settings, "rows": self.rows},
                                                                indent=2) + "\n")


# ---- the steps -------------------------------------------------------------------------------------------------
@torch.no_grad()
def forward(model, ids, batch: int):
    dev = next(model.parameters()).device
    for i in range(0, len(ids), batch):
        model(input_ids=ids[i:i + batch].to(dev), use_cache=False)


def profile_detect(model, ids, out: Path, args) -> str:
    """torch.profiler over one in-memory detect: the host reads of device values per phase (forward with the
    hooks / flush / rest, scripts/detect_profile.py) and the op table. The hooks must not wait for the device:
    item, nonzero and cudaStreamSynchronize in the forward phase are the model's own (a plain forward has them)."""
    from detect_profile import profile_detect as profiled, profile_forward, table as phase_table
    sysq.detect(model, ids[:1], quiet=True, batch_size=args.batch_size)        # warm-up
    counts, seconds, prof = profiled(model, ids, args.batch_size)
    plain = profile_forward(model, ids, args.batch_size)
    _sync()
    avg = prof.key_averages()
    key = "self_device_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    table = avg.table(sort_by=key, row_limit=30)
    batches = -(-len(ids) // args.batch_size)
    phases = phase_table(counts, seconds, batches, plain)
    text = (f"detect on {len(ids)} windows x {ids.shape[1]} tokens, batch {args.batch_size} ({batches} batches); "
            f"host reads of device values per phase (calls per batch; rest: per detect):\n{phases}\n\n"
            f"op table sorted by {key}:\n{table}")
    from sysq.io import atomic_write_text
    atomic_write_text(out / f"profile-{args.config}.txt", text)
    fused = [e for e in avg if "site_reduce" in e.key]       # the fused Triton pass (capture.reduce_fused)
    fused_line = ("fused site reduction: " + "; ".join(
        f"{e.key} {e.count} calls, {getattr(e, key) / 1e3:.1f} ms" for e in fused)) if fused else \
        "fused site reduction: not run (the torch form reduced the sites)"
    text += "\n" + fused_line
    print(text.split("op table")[0])
    print("\n".join(table.splitlines()[:18]), flush=True)
    print(fused_line, flush=True)
    fwd = counts["forward"]
    return (f"ops per batch: forward {fwd['ops'] / batches:g} (plain {plain[0]['ops']:g}), records "
            f"{counts['records']['ops'] / batches:g}, rest {counts['rest']['ops']:g}; forward per batch: "
            + ", ".join(f"{k.split('::')[-1]} {fwd[k] / batches:g}" for k in
                        ("aten::item", "aten::nonzero", "cudaStreamSynchronize")))


def reduce_name(device) -> str:
    """Which form reduces detect's sites on `device` now (SYSQ_REDUCE, capture.fused)."""
    if not str(device).startswith("cuda"):
        return "the CPU form"
    if not capture.fused(device):
        return "the torch form"
    from sysq import _reduce_triton as R          # the kernel design: SYSQ_REDUCE_KERNEL
    tile = ",".join(map(str, (R.BLOCK_T, R.TOKENS, R.BLOCK_C, R.NUM_WARPS, R.ROWWISE, R.PREFETCH)))
    return f"the fused Triton pass ({R.VARIANT}, tile {tile}" + (f"/{','.join(map(str, R.TOKEN_TILE))})"
                                                                if R.VARIANT == "split" else ")")


def cpu_tail_map(model, cpu_layers: int) -> dict:
    """A device_map with the last `cpu_layers` decoder layers on the CPU and every other module on GPU 0."""
    ad = sysq.get_adapter(model)
    base = ad.family.layers.rsplit(".", 1)[0]                # the module that holds the decoder layers
    dmap = {n: 0 for n, _ in model.named_children() if n != base.split(".")[0]}
    dmap |= {f"{base}.{n}": 0 for n, _ in model.get_submodule(base).named_children()
             if f"{base}.{n}" != ad.family.layers}
    return dmap | {f"{ad.family.layers}.{i}": "cpu" if i >= ad.num_layers - cpu_layers else 0
                   for i in range(ad.num_layers)}


def place(model, dmap: dict):
    """dispatch_model's placement with modules that run on the CPU: dispatch_model treats a "cpu" entry as
    offloaded (its weights are moved to the main GPU for every forward), so the blocks are placed and hooked
    here with their own execution devices instead."""
    from accelerate.hooks import attach_align_device_hook_on_blocks
    where = {n: torch.device("cpu") if d == "cpu" else torch.device("cuda", d) for n, d in dmap.items()}
    for n, d in where.items():
        model.get_submodule(n).to(d)
    attach_align_device_hook_on_blocks(model, execution_device=where, offload={n: False for n in where},
                                       skip_keys="past_key_values")
    model.hf_device_map = dict(dmap)
    return model


def split(model, gpus: int, device: str, cpu_layers: int = 0):
    """The model dispatched over `gpus` GPUs by accelerate, decoder layers kept whole (on the CPU: every module on
    the CPU, with accelerate's hooks all the same). cpu_layers: the last that many decoder layers on the CPU and
    the rest on GPU 0 (a model split over two devices, where only one GPU is lent)."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory
    ad = sysq.get_adapter(model)
    keep = [type(ad.layers()[0]).__name__]
    if cpu_layers and device != "cpu":
        return place(model, cpu_tail_map(model, cpu_layers))
    if device == "cpu":                           # each decoder layer its own entry, as on several GPUs
        layers = {f"{ad.family.layers}.{i}" for i in range(ad.num_layers)}
        dmap = {}

        def walk(prefix, module):
            for n, child in module.named_children():
                name = f"{prefix}.{n}" if prefix else n
                if name in layers or not any(x.startswith(name + ".") for x in layers):
                    dmap[name] = "cpu"
                else:
                    walk(name, child)

        walk("", model)
        return dispatch_model(model, dmap, force_hooks=True)
    mem = get_balanced_memory(model, max_memory={i: torch.cuda.mem_get_info(i)[0] for i in range(gpus)},
                              no_split_module_classes=keep)
    return dispatch_model(model, infer_auto_device_map(model, max_memory=mem, no_split_module_classes=keep))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="tiny", choices=sorted(CONFIGS))
    p.add_argument("--layers", type=int, default=None, help="decoder layers to build (a slice; default: all)")
    p.add_argument("--steps", default=DEFAULT_STEPS, help=f"comma-separated (default: {DEFAULT_STEPS})")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--gpus", type=int, default=1, help="split-* steps: GPUs to split the model over")
    p.add_argument("--cpu-layers", type=int, default=0,
                   help="split-* steps: the last N decoder layers on the CPU, the rest on GPU 0 (two devices)")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on a GPU, float32 on the CPU")
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward (forward, detect)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions of forward and detect (median)")
    p.add_argument("--profile-windows", type=int, default=4, help="windows the profiled detect runs on")
    p.add_argument("--chunk-gib", type=float, default=None,
                   help="detect: activations kept for a chunk of layers before they are reduced together "
                        "(sysq.capture.CHUNK_BYTES; default %.0f GiB)" % (capture.CHUNK_BYTES / 2**30))
    p.add_argument("--out", default=os.environ.get("OUT", "out"))
    p.add_argument("--reduce", default=os.environ.get("SYSQ_REDUCE", "auto"),
                   help="detect's site reductions (SYSQ_REDUCE): auto (the fused Triton pass on CUDA), torch, or a "
                        "comma-separated list, each timed in turn (A/B; profile takes the first)")
    args = p.parse_args()
    if args.chunk_gib is not None:
        capture.CHUNK_BYTES = int(args.chunk_gib * 2**30)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    steps = args.steps.split(",")
    bad = set(steps) - set(DEFAULT_STEPS.split(",")) - set(SPLIT_STEPS)
    if bad:
        p.error(f"unknown steps {sorted(bad)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for h in logging.getLogger().handlers:
        h.setLevel(logging.WARNING)
    logging.getLogger("sysq.sequential").setLevel(logging.DEBUG)       # per-layer seconds, read by Meter
    out = Path(args.out)
    table = Table(args, out)
    dtype = sysq.models.parse_dtype(args.dtype)
    print(table.markdown().split("\n")[0])
    print("| step | pipeline | s | s / layer | s at full depth | peak GPU GiB | peak host GiB | note |\n"
          "|---|---|---|---|---|---|---|---|", flush=True)

    with Meter() as m:
        model = build(args.config, args.layers, args.device, dtype)
    table.add("build", m, "-", note=f"{sum(t.numel() for t in model.parameters()) / 1e9:.2f}B parameters")
    table.settings.update(weights(model, table.settings["full_layers"]))
    print(f"weights: {table.settings['weights_gib']:.2f} GiB built; at full depth "
          f"{table.settings['full_weights_gib']:.2f} GiB (the sequential path's host need), of which one decoder "
          f"layer {table.settings['layer_gib']:.2f} GiB and the rest (embeddings, head, norm) "
          f"{table.settings['outside_gib']:.2f} GiB (the host need with the layers offloaded to disk)", flush=True)
    ids = windows(model.config, args.windows, args.seqlen)
    report = None

    # forward and detect alternate, rep by rep (forward, detect, forward, detect, ...): the machine drifts within a
    # process (clocks, the host's other tenants), and a ratio of runs taken minutes apart carries that drift
    reduce_forms = args.reduce.split(",") if "detect" in steps else []
    fwd_times, det_times = [], {form: [] for form in reduce_forms}
    if "forward" in steps or "detect" in steps:
        forward(model, ids[:1], 1)                                                  # warm-up
        for form in reduce_forms:
            os.environ["SYSQ_REDUCE"] = form
            for warm in (ids[:1], ids):  # warm-up: the kernels compiled, then the caches (pinned host memory) at size
                sysq.detect(model, warm, quiet=True, batch_size=args.batch_size)
        for _ in range(args.reps):
            gc.collect()
            with Meter() as m_fwd:
                forward(model, ids, args.batch_size)
            fwd_times.append(m_fwd.seconds)
            for form in reduce_forms:   # the last form stays set for the steps after
                os.environ["SYSQ_REDUCE"] = form
                report = None           # the previous report freed, and a full collection, outside the timed part
                gc.collect()
                with Meter() as m:
                    report = sysq.detect(model, ids, quiet=True, batch_size=args.batch_size)
                det_times[form].append((m.seconds, m))
        fwd = statistics.median(fwd_times)
        m_fwd.seconds = fwd
        table.add("forward", m_fwd, "memory", note=f"median of {args.reps}: " + ", ".join(f"{t:.2f}" for t in fwd_times))
    for form, runs in det_times.items():
        os.environ["SYSQ_REDUCE"] = form                # reduce_name reads it; the last form stays set
        times = [t for t, _ in runs]
        m = runs[-1][1]
        m.seconds = statistics.median(times)
        pair = statistics.median(t / f for t, f in zip(times, fwd_times))
        found = report.summary["dominant_channel"]
        table.add("detect", m, report.cost["pipeline"], note=f"{m.seconds / fwd:.2f}x forward (median of the "
                  f"{args.reps} detect / forward pairs, each run right after its forward: {pair:.2f}x); sites "
                  f"reduced by {reduce_name(args.device)}; channel {found} (planted {D}) from layer "
                  f"{report.summary['emergence_layer']}; chunks of up to {report.cost['chunk_layers']} layers holding "
                  f"{report.cost['chunk_bytes'] / 2**30:.2f} GiB; median of {args.reps}: "
                  + ", ".join(f"{t:.2f}" for t in times))
    if "profile" in steps:
        os.environ["SYSQ_REDUCE"] = args.reduce.split(",")[0]
        with Meter() as m:
            note = profile_detect(model, ids[: args.profile_windows], out, args)
        table.add("profile", m, "memory", note=f"sites reduced by {reduce_name(args.device)}; " + note)

    seq_steps = [s for s in steps if s in ("seq-detect", "mitigate", "static", "gptq")]
    if seq_steps:
        kw = dict(quiet=True, pipeline="sequential", device=args.device)
        model.to("cpu")
        _empty()
        recipe = "w8a8-static"
        if "seq-detect" in steps:
            with Meter() as m:
                report = sysq.detect(model, ids, batch_size=args.batch_size, **kw)
            table.add("detect", m, "sequential", note=f"channel {report.summary['dominant_channel']} (planted {D})")
        if "mitigate" in steps:
            with Meter() as m:
                plan = sysq.plan(report, "w8a8-static", "auto-fast")
                recipe = sysq.mitigate(model, plan, ids, report=report, **kw)
            table.add("mitigate", m, "sequential", note="auto-fast for w8a8-static: " + "+".join(
                k for k in ("rotate", "smooth", "clip", "preserve_tokens") if getattr(plan, k)))
        if "static" in steps:
            with Meter() as m:
                sysq.quantize(model, recipe, ids, **kw)
            table.add("static", m, "sequential", note=getattr(recipe, "name", recipe))
        if "gptq" in steps:
            if "mitigate" in steps or "static" in steps:      # the same float weights again (same seed)
                del model
                _empty()
                model = build(args.config, args.layers, args.device, dtype).to("cpu")
                _empty()
            with Meter() as m:
                sysq.quantize(model, "w4a16+gptq", ids, **kw)
            table.add("gptq", m, "sequential", note="w4a16 g128 GPTQ, the float weights")

    split_steps = [s for s in steps if s.startswith("split-")]
    if split_steps:
        if seq_steps:                               # a fresh float model on the GPUs
            del model
            _empty()
            model = build(args.config, args.layers, args.device, dtype)
        model = split(model, args.gpus, args.device, args.cpu_layers)
        where = "memory, split over " + ", ".join(sorted({str(d) for d in model.hf_device_map.values()}))
        recipe = "w8a8-static"
        if "split-detect" in steps:
            with Meter() as m:
                report = sysq.detect(model, ids, quiet=True, batch_size=args.batch_size)
            table.add("detect", m, where, note=f"channel {report.summary['dominant_channel']} (planted {D})")
        if "split-mitigate" in steps:
            with Meter() as m:
                recipe = sysq.mitigate(model, sysq.plan(report, "w8a8-static", "auto-fast"), ids, report=report,
                                       quiet=True)
            table.add("mitigate", m, where, note="auto-fast for w8a8-static")
        if "split-static" in steps:
            with Meter() as m:
                sysq.quantize(model, recipe, ids, quiet=True)
            table.add("static", m, where, note=getattr(recipe, "name", recipe))
        if "split-ppl" in steps:
            from evaluation.perplexity import perplexity
            from sysq.data import Windows
            w = Windows(ids=ids, source="random tokens", seqlen=args.seqlen, bos=None, seed=0, total_windows=len(ids))
            with Meter() as m:
                res = perplexity(model, w, batch_size=args.batch_size, quiet=True)
            table.add("perplexity", m, where, note=f"ppl {res.ppl:.1f} ({'quantized' if 'split-static' in steps else 'float'})")
        if "split-gptq" in steps:
            if {"split-mitigate", "split-static"} & set(steps):
                del model
                _empty()
                model = split(build(args.config, args.layers, args.device, dtype), args.gpus, args.device,
                              args.cpu_layers)
            with Meter() as m:
                sysq.quantize(model, "w4a16+gptq", ids, quiet=True)
            table.add("gptq", m, where, note="w4a16 g128 GPTQ")
    print(f"wrote {out}/scale-*.md, .json")


def _empty() -> None:
    """Free a dropped model now (its adapter refers back to it: a cycle that only the collector frees)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
