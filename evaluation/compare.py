"""The comparison grid: one model under several configurations, measured the same way, one row each.

    rows = run_grid(["fp", "w8a8-static", "w8a8-static@auto", "bnb-int8", "quanto-w8a8"], out="out/grid")

A configuration is a name:
  fp                       the float model
  RECIPE                   a sysq recipe (w8a8, w8a8-static, w4a16-g128, w8a8+kv4, bnb-int8, bnb-nf4, a YAML)
  RECIPE@PLAN              a mitigation plan first (auto, smooth, smooth+preserve-tokens, ...), then RECIPE
  quanto-w8a8 | quanto-w4  optimum-quanto (evaluation/baselines.py)
  llmc-*                   llm-compressor in its own venv (evaluation/peers.py; LLMCOMPRESSOR lists them)
  autoround-*              auto-round in its own venv (evaluation/peers.py; AUTOROUND lists them)
Handlers are a small registry (`HANDLERS`, `register`), so a new peer library is one function.

Each row: perplexity (and its ratio to the FP row of the same run), acc / acc_norm with stderr per task,
weight bytes, linear module classes, seconds. Rows are cached in OUT/rows/<key>.json, the key a hash of the
configuration and every setting, so a rerun with the same settings recomputes nothing. A failing row becomes
an error row and the grid goes on; every output is rewritten atomically after each row.
"""
from __future__ import annotations

import csv
import gc
import hashlib
import io
import json
import logging
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from sysq.errors import SysqError
from sysq.io import atomic_write_bytes, atomic_write_text

from . import baselines, harness

log = logging.getLogger(__name__)


# ---- configurations and their handlers ----------------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    name: str
    recipe: str
    plan: str = "none"


def parse_config(name: str) -> Config:
    name = name.strip()
    if not name:
        raise SysqError("empty configuration name in the grid; separate configurations with commas")
    recipe, _, plan = name.partition("@")
    return Config(name, recipe, plan or "none")


HANDLERS: dict[str, Callable] = {}


def register(name: str):
    """Register a handler(model, tokenizer, config, ctx) -> info dict for configurations named `name`."""
    def wrap(fn):
        HANDLERS[name] = fn
        return fn
    return wrap


@dataclass
class GridContext:
    """What handlers share within one run: calibration windows and the outlier report, made once, on demand."""

    calib_n: int = 32
    calib_seqlen: int = 512
    calib_seed: int = 0
    detect_windows: int = 4
    quiet: bool = False
    task_dir: Path | None = None
    out: Path | None = None           # the grid's output folder (peer checkpoints go under OUT/peers/)
    dtype: str = "float32"
    device: str = "cpu"
    peer_dir: Path | None = None      # peer checkpoints (CACHE/peers), reused across evaluation settings
    model_dir: Path | None = None     # quantized sysq models (CACHE/models) when kept: --keep-models
    _calib: object = None
    _report: object = None

    def calib(self, tokenizer):
        if self._calib is None:
            from sysq.data import calibration
            self._calib = calibration(tokenizer, n=self.calib_n, seqlen=self.calib_seqlen, seed=self.calib_seed)
        return self._calib

    def report(self, model, tokenizer):
        """The outlier report of the float model (detect runs before any transform touches `model`)."""
        if self._report is None:
            from sysq.detect import detect
            ids = self.calib(tokenizer).ids[: self.detect_windows]
            self._report = detect(model, ids, tokenizer=tokenizer, quiet=self.quiet)
        return self._report


@register("fp")
def _fp(model, tokenizer, cfg: Config, ctx: GridContext) -> dict:
    return {"bits": {"weight": 32, "act": 32}}


def _quanto(model, tokenizer, cfg: Config, ctx: GridContext) -> dict:
    info = baselines.quanto_quantize(model, cfg.recipe, ctx.calib(tokenizer), quiet=ctx.quiet)
    bits = {"qint8": 8, "qint4": 4, None: 32}
    return {**info, "bits": {"weight": bits[info["weights"]], "act": bits[info["activations"]]}}


for _name in baselines.QUANTO:
    register(_name)(_quanto)


LLMCOMPRESSOR = {
    # grid name: (llm-compressor scheme in evaluation/peer_scripts/llmcompressor_quantize.py, group size)
    "llmc-sq-gptq-w8a8-static": ("sq-gptq-w8a8-static", None),
    "llmc-sq-gptq-w8a8": ("sq-gptq-w8a8", None),
    "llmc-gptq-w8a8-static": ("gptq-w8a8-static", None),
    "llmc-gptq-w4a16-g64": ("gptq-w4a16", 64),
    "llmc-awq-w4a16-g64": ("awq-w4a16", 64),
}


def _llmcompressor(model, tokenizer, cfg: Config, ctx: GridContext) -> dict:
    """llm-compressor's own quantizer (its venv), on this grid's calibration windows; the compressed-tensors folder
    it writes (once per calibration: other window sets reuse it) is loaded back and replaces the row's model."""
    from .peers import local_folder

    scheme, group = LLMCOMPRESSOR[cfg.recipe]
    spec = {"model": str(local_folder(model)), "scheme": scheme, "group_size": group}
    info = _peer_checkpoint("llmcompressor", "llmcompressor_quantize.py", spec, ctx.calib(tokenizer),
                            (ctx.peer_dir or Path(ctx.out or "out/grid") / "peers") / cfg.name, ctx.quiet)
    bits = {"weight": 4 if "w4" in scheme else 8, "act": 32 if "a16" in scheme else 8}
    return {**info, "bits": bits, "model": _load_peer_checkpoint(Path(info["checkpoint"]), model, ctx.quiet)}


for _name in LLMCOMPRESSOR:
    register(_name)(_llmcompressor)


def _recipe_bits(r) -> dict:
    bits = {"weight": r.weight.bits if r.weight else 32, "act": r.act.bits if r.act else 32}
    if r.backend == "bnb-int8":
        bits = {"weight": 8, "act": "8 (LLM.int8: outliers > %g in float)" % r.bnb_threshold}
    elif r.backend in ("bnb-nf4", "bnb-fp4"):
        bits = {"weight": 4, "act": 32}
    if r.weight is not None and r.weight.group_size:
        bits["group_size"] = r.weight.group_size
    if r.kv is not None:
        bits["kv"] = r.kv.bits
    return bits


def _sysq_recipe(model, tokenizer, cfg: Config, ctx: GridContext) -> dict:
    """A sysq recipe, after a mitigation plan when the configuration names one."""
    from sysq.quant import get_recipe, quantize

    r = get_recipe(cfg.recipe)      # unknown names fail here, before any work
    calib = ctx.calib(tokenizer)
    info = {"description": r.describe(), "bits": _recipe_bits(r)}
    if cfg.plan == "none":
        info["quant"] = quantize(model, r, calib, quiet=ctx.quiet).to_dict()
        return info
    try:
        from sysq.mitigate.api import mitigate, plan
    except ImportError as e:
        raise SysqError(f"configuration {cfg.name!r} names plan {cfg.plan!r} but sysq.mitigate is unavailable "
                        f"({e}); drop '@{cfg.plan}' or install the mitigation module") from e
    report = ctx.report(model, tokenizer) if {"auto", "auto-fast"} & set(cfg.plan.split("+")) else None
    p = plan(report, cfg.recipe, method=cfg.plan)
    info["quant"] = quantize(model, mitigate(model, p, calib, quiet=ctx.quiet, report=report), calib,
                             quiet=ctx.quiet).to_dict()
    info["plan"] = p.to_dict() if hasattr(p, "to_dict") else str(p)
    if report is not None:
        info["outliers"] = report.summary
        info["detect_windows"] = ctx.detect_windows
    return info


_AR = {"bits": 4, "sym": False, "iters": 200, "batch_size": 8, "seed": 0}      # auto-round's defaults, asymmetric
AUTOROUND = {
    # grid name: evaluation/peer_scripts/autoround_quantize.py settings
    "autoround-w4a16-g64": {**_AR, "group_size": 64},
    "autoround-w4a16-g128": {**_AR, "group_size": 128},
    # what this 2-core CPU allows: 50 SignSGD steps per block on batches of 2 windows
    "autoround-w4a16-g64-cpu": {**_AR, "group_size": 64, "iters": 50, "batch_size": 2},
    "autoround-w4a16-g128-cpu": {**_AR, "group_size": 128, "iters": 50, "batch_size": 2},
}


def _peer_checkpoint(venv: str, script: str, spec: dict, calib, folder: Path, quiet: bool) -> dict:
    """Run the peer once per (settings, calibration windows): the folder name carries their hash, so another
    evaluation set (another OUT with the same --cache) reuses the checkpoint."""
    from .peers import run_peer
    ids = getattr(calib, "ids", calib)
    key = hashlib.sha256(json.dumps({"spec": spec, "calib": ids.tolist()}, sort_keys=True).encode()).hexdigest()[:12]
    out = folder.with_name(f"{folder.name}-{key}")
    if (out / "peer.json").is_file():
        log.info("grid: peer checkpoint reused from %s", out)
        return {**json.loads((out / "peer.json").read_text()), "checkpoint": str(out), "reused": True}
    return {**run_peer(venv, script, spec, ids, out, quiet), "checkpoint": str(out)}


def _autoround(model, tokenizer, cfg: Config, ctx: GridContext) -> dict:
    """auto-round's own quantizer (its venv), on this grid's calibration windows; the compressed-tensors folder it
    writes is loaded back with plain transformers and replaces the row's model."""
    from .peers import local_folder
    settings = AUTOROUND[cfg.recipe]
    spec = {"model": str(local_folder(model)), **settings}
    info = _peer_checkpoint("autoround", "autoround_quantize.py", spec, ctx.calib(tokenizer),
                            (ctx.peer_dir or Path(ctx.out or "out/grid") / "peers") / cfg.name, ctx.quiet)
    bits = {"weight": settings["bits"], "act": 32, "group_size": settings["group_size"]}
    return {**info, "bits": bits, "model": _load_peer_checkpoint(Path(info["checkpoint"]), model, ctx.quiet)}


def _load_peer_checkpoint(folder: Path, model, quiet: bool):
    """A peer's folder on the row's device and dtype: compressed-tensors through transformers, else a float
    folder (quantize-dequantized weights)."""
    from sysq.quant.export import load_with_transformers
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    if "quantization_config" in json.loads((folder / "config.json").read_text()):
        return load_with_transformers(folder, dtype=dtype, device=device, quiet=quiet)
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()


for _name in AUTOROUND:
    register(_name)(_autoround)


def handler_for(cfg: Config) -> Callable:
    return HANDLERS.get(cfg.recipe, _sysq_recipe)


# ---- settings, keys and rows --------------------------------------------------------------------------------

@dataclass
class GridSettings:
    model: str = "smollm2-135m"
    dtype: str = "float32"
    data: str = "wikitext2"
    seqlen: int = 512
    windows: int | None = 40          # first N perplexity windows; None = all
    window_offset: int = 0            # skip this many windows first (40: a second, disjoint set, windows 40-79)
    bos: bool = True
    tasks: tuple = harness.DEFAULT_TASKS
    limit: int | None = None          # documents per task; None = all
    batch_size: int = 4               # lm-eval batch (<= 4 on CPU: memory)
    calib_n: int = 32
    calib_seqlen: int = 512
    calib_seed: int = 0
    detect_n: int = 8                 # calibration windows the `auto` plan's outlier report is detected on
    device: str = "cpu"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tasks"] = list(self.tasks)
        return d


def row_key(cfg: Config, settings: GridSettings) -> str:
    d = settings.to_dict()
    if not d["window_offset"]:
        del d["window_offset"]        # rows measured before the option existed keep their keys
    blob = json.dumps({"config": cfg.name, **d}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


QUANT_SETTINGS = ("model", "dtype", "calib_n", "calib_seqlen", "calib_seed", "detect_n", "device")


def model_key(cfg: Config, settings: GridSettings) -> str:
    """What a quantized model depends on (not the evaluation windows or tasks): OUT/models/<key>."""
    d = settings.to_dict()
    blob = json.dumps({"config": cfg.name, **{k: d[k] for k in QUANT_SETTINGS}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _cached_model(ctx: GridContext, key: str):
    """(model, info) of a sysq row quantized before with the same settings (ctx.keep_models), else None."""
    folder = ctx.model_dir / key if ctx.model_dir is not None else None
    if folder is None or not (folder / "grid_info.json").is_file():
        return None
    from sysq.models import load
    model, _ = load(str(folder), dtype=ctx.dtype, device=ctx.device)
    log.info("grid: quantized model reused from %s", folder)
    return model, {**json.loads((folder / "grid_info.json").read_text()), "model_reused_from": str(folder)}


def _keep_model(ctx: GridContext, key: str, model, info: dict) -> None:
    """Save a sysq row's quantized model so other evaluation settings reuse it (sysq.save reloads it exactly)."""
    if ctx.model_dir is None:
        return
    from sysq.quant.io import save
    try:
        folder = save(model, ctx.model_dir / key)
    except SysqError as e:                       # e.g. bitsandbytes modules: not a sysq folder
        log.info("grid: model not kept (%s)", e)
        return
    atomic_write_text(folder / "grid_info.json", json.dumps(info, default=str))


@dataclass
class Row:
    config: str
    recipe: str
    plan: str
    key: str
    status: str = "ok"                 # ok | error
    ppl: float | None = None
    ppl_ratio: float | None = None     # ppl / ppl of the FP row with the same settings
    tasks: dict = field(default_factory=dict)   # task -> {acc, acc_stderr, acc_norm, acc_norm_stderr, n}
    weight_bytes: int | None = None
    modules: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    perplexity: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)  # quantize, perplexity, tasks, total
    error: str | None = None
    settings: dict = field(default_factory=dict)
    reused: bool = False               # True when read back from OUT/rows instead of computed

    def to_dict(self) -> dict:
        return asdict(self)


def _row_path(out: Path, key: str) -> Path:
    return out / "rows" / f"{key}.json"


def _cached(out: Path, key: str) -> Row | None:
    path = _row_path(out, key)
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    if d.get("status") != "ok":
        return None                    # failed rows are retried
    d["reused"] = True
    known = Row.__dataclass_fields__
    return Row(**{k: v for k, v in d.items() if k in known})


def compute_row(cfg: Config, settings: GridSettings, ctx: GridContext, loader: Callable, windows) -> Row:
    """Load a fresh model, apply the configuration, measure perplexity and tasks."""
    from evaluation.perplexity import perplexity

    row = Row(cfg.name, cfg.recipe, cfg.plan, row_key(cfg, settings), settings=settings.to_dict())
    t0 = time.perf_counter()
    handler = handler_for(cfg)
    mkey = model_key(cfg, settings)
    cached = _cached_model(ctx, mkey) if handler is _sysq_recipe else None
    if cached is not None:
        _, tok = loader()
        model, info = cached
    else:
        model, tok = loader()
        info = handler(model, tok, cfg, ctx) or {}
        if "model" in info:                # a peer that wrote its own checkpoint: measure what it loaded
            model = info.pop("model")
        elif handler is _sysq_recipe:
            _keep_model(ctx, mkey, model, info)
    row.info = info
    row.seconds["quantize"] = round(time.perf_counter() - t0, 2)
    row.weight_bytes = baselines.weight_bytes(model)
    row.modules = baselines.linear_modules(model)
    ppl = perplexity(model, windows, quiet=ctx.quiet, model_name=settings.model, recipe=cfg.name)
    row.ppl, row.perplexity, row.seconds["perplexity"] = ppl.ppl, ppl.to_dict(), round(ppl.seconds, 2)
    if settings.tasks:
        t1 = time.perf_counter()
        res = harness.evaluate(model, tok, list(settings.tasks), limit=settings.limit,
                               batch_size=settings.batch_size, bos=settings.bos, quiet=ctx.quiet,
                               task_dir=ctx.task_dir)
        row.tasks = harness.summarize(res)
        row.seconds["tasks"] = round(time.perf_counter() - t1, 2)
    row.seconds["total"] = round(time.perf_counter() - t0, 2)
    del model
    gc.collect()
    return row


def run_grid(configs, settings: GridSettings | None = None, out: str | Path = "out/grid",
             loader: Callable | None = None, quiet: bool = False, fail_fast: bool = False,
             keep_models: bool = False, cache: str | Path | None = None) -> list[Row]:
    """Run every configuration (FP first, added when missing), writing outputs after each row.

    Peer checkpoints go to CACHE/peers (CACHE defaults to OUT); keep_models=True also saves each sysq row's
    quantized model under CACHE/models (sysq.save; about the size of the quantized weights). Both are reused
    when only the evaluation settings differ (another window offset, written to another OUT with one CACHE).

    loader() -> (model, tokenizer) gives a fresh float model per row; by default sysq.load(settings.model).
    A row that fails is kept as an error row (fail_fast=True raises instead, after writing the outputs).
    """
    settings = settings or GridSettings()
    cfgs = [parse_config(c) if isinstance(c, str) else c for c in configs]
    if not any(c.recipe == "fp" and c.plan == "none" for c in cfgs):
        cfgs.insert(0, Config("fp", "fp"))
    names = [c.name for c in cfgs]
    if len(set(names)) != len(names):
        raise SysqError(f"configuration names repeat in {names}; list each once")
    out = Path(out)
    (out / "rows").mkdir(parents=True, exist_ok=True)
    if loader is None:
        from sysq.models import load

        def loader():
            return load(settings.model, dtype=settings.dtype, device=settings.device)

    ctx = GridContext(settings.calib_n, settings.calib_seqlen, settings.calib_seed, settings.detect_n, quiet=quiet,
                      out=out, dtype=settings.dtype, device=settings.device)
    cache = Path(cache) if cache is not None else out
    ctx.peer_dir, ctx.model_dir = cache / "peers", cache / "models" if keep_models else None
    ctx.task_dir = harness.write_tasks(out / "tasks", [t for t in settings.tasks if t in harness.LOCAL_TASKS])
    rows: list[Row] = []
    windows = None
    fp_key = row_key(Config("fp", "fp"), settings)
    for cfg in cfgs:
        key = row_key(cfg, settings)
        row = _cached(out, key)
        if row is not None:
            log.info("grid: %s reused from %s", cfg.name, _row_path(out, key))
        else:
            if windows is None:
                from sysq.data import windows as make_windows
                _, tok = loader()
                windows = make_windows(settings.data, tok, n=settings.windows, seqlen=settings.seqlen,
                                       bos=settings.bos, offset=settings.window_offset)
                del _
            log.info("grid: computing %s", cfg.name)
            try:
                row = compute_row(cfg, settings, ctx, loader, windows)
            except Exception as e:  # keep the rows already written; say what broke and how
                log.error("grid: %s failed: %s", cfg.name, e)
                row = Row(cfg.name, cfg.recipe, cfg.plan, key, status="error", settings=settings.to_dict(),
                          error=f"{type(e).__name__}: {e}")
                row.info["traceback"] = traceback.format_exc(limit=6)
                if fail_fast:
                    rows.append(row)
                    _save_row(out, row)
                    write_outputs(out, rows, settings, fp_key)
                    raise
            _save_row(out, row)
        rows.append(row)
        write_outputs(out, rows, settings, fp_key)
    return rows


def _save_row(out: Path, row: Row) -> None:
    atomic_write_text(_row_path(out, row.key), json.dumps(row.to_dict(), indent=1, default=str) + "\n")


# ---- outputs --------------------------------------------------------------------------------------------------

def _with_ratios(rows: list[Row], fp_key: str) -> list[Row]:
    fp = next((r for r in rows if r.key == fp_key and r.status == "ok"), None)
    for r in rows:
        r.ppl_ratio = r.ppl / fp.ppl if fp is not None and r.ppl is not None else None
    return rows


def _fmt(v, digits=4) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _task_cells(r: Row, task: str) -> list[str]:
    t = r.tasks.get(task, {})
    cells = []
    for m in ("acc", "acc_norm"):
        v, se = t.get(m), t.get(f"{m}_stderr")
        cells.append("" if v is None else f"{v:.4f} ± {se:.4f}" if se is not None else f"{v:.4f}")
    return cells


def _window_text(s: GridSettings) -> str:
    if s.window_offset:
        last = f"{s.window_offset + s.windows - 1}" if s.windows is not None else "the end"
        return f"windows {s.window_offset}-{last}"
    return f"{'all' if s.windows is None else f'first {s.windows}'} windows"


def markdown_table(rows: list[Row], settings: GridSettings) -> str:
    tasks = list(settings.tasks)
    head = ["config", "ppl", "× FP"] + [f"{t} {m}" for t in tasks for m in ("acc", "acc_norm")] + \
        ["weights MiB", "linears", "time s", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.config, _fmt(r.ppl), _fmt(r.ppl_ratio, 3)]
        for t in tasks:
            cells += _task_cells(r, t)
        cells += [_fmt(r.weight_bytes / 2**20, 1) if r.weight_bytes else "",
                  ", ".join(f"{n}×{k}" for k, n in r.modules.items()),
                  _fmt(r.seconds.get("total"), 0), r.status if r.status == "ok" else f"error: {r.error}"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    s = settings
    n_docs = {t: next((r.tasks[t].get("n") for r in rows if t in r.tasks), None) for t in tasks}
    lines.append("")
    lines.append(f"Model {s.model} ({s.dtype}). Perplexity: {s.data}, seqlen {s.seqlen}, "
                 f"{_window_text(s)}, BOS {'on' if s.bos else 'off'}. "
                 f"Tasks (lm-eval, 0-shot): " + ", ".join(f"{t} n={n_docs[t]}" for t in tasks) +
                 f". Calibration: {s.calib_n} x {s.calib_seqlen} tokens of wikitext2-valid, seed {s.calib_seed}; "
                 f"`auto` plans from an outlier report on the first {s.detect_n} of them. Device {s.device}.")
    return "\n".join(lines) + "\n"


def csv_text(rows: list[Row], settings: GridSettings) -> str:
    tasks = list(settings.tasks)
    cols = ["config", "recipe", "plan", "status", "ppl", "ppl_ratio"] + \
        [f"{t}_{m}" for t in tasks for m in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "n")] + \
        ["weight_bytes", "seconds", "key", "error"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for r in rows:
        w.writerow([r.config, r.recipe, r.plan, r.status, r.ppl, r.ppl_ratio] +
                   [r.tasks.get(t, {}).get(m) for t in tasks
                    for m in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "n")] +
                   [r.weight_bytes, r.seconds.get("total"), r.key, r.error])
    return buf.getvalue()


def chart_png(rows: list[Row], settings: GridSettings) -> bytes:
    """Two panels: perplexity ratio to FP, and accuracy delta to FP (points) per task."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.status == "ok"]
    fp = next((r for r in ok if r.recipe == "fp" and r.plan == "none"), None)
    names = [r.config for r in ok]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.2 * len(ok) + 4), 4.2))
    ax = axes[0]
    ax.bar(names, [r.ppl_ratio or 0 for r in ok], color="tab:blue")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_ylabel("perplexity / FP perplexity")
    ax.set_title(f"{settings.data}, seqlen {settings.seqlen}")
    ax = axes[1]
    tasks = list(settings.tasks)
    width = 0.8 / max(1, len(tasks))
    for i, t in enumerate(tasks):
        metric = "acc_norm" if any("acc_norm" in r.tasks.get(t, {}) for r in ok) else "acc"
        base = (fp.tasks.get(t, {}).get(metric) if fp else None)
        vals = [100 * (r.tasks.get(t, {}).get(metric, 0) - base) if base is not None and metric in r.tasks.get(t, {})
                else 0 for r in ok]
        ax.bar([j + (i - (len(tasks) - 1) / 2) * width for j in range(len(ok))], vals, width, label=f"{t} {metric}")
    ax.set_xticks(range(len(ok)), names)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_ylabel("accuracy − FP accuracy (points)")
    if tasks:
        ax.legend(fontsize=8)
    for a in axes:
        a.tick_params(axis="x", rotation=35, labelsize=8)
        for lab in a.get_xticklabels():
            lab.set_horizontalalignment("right")
    fig.suptitle(f"{settings.model}: configurations against FP")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_outputs(out: Path, rows: list[Row], settings: GridSettings, fp_key: str) -> None:
    """results.json / results.csv / results.md / results.png, each replaced atomically."""
    rows = _with_ratios(rows, fp_key)
    from importlib.metadata import PackageNotFoundError, version

    def installed(p):                  # a machine without one (a bare GPU box) still gets its results written
        try:
            return version(p)
        except PackageNotFoundError:
            return None
    meta = {"settings": settings.to_dict(),
            "versions": {p: installed(p) for p in ("torch", "transformers", "lm_eval", "bitsandbytes",
                                                   "optimum-quanto")},
            "rows": [r.to_dict() for r in rows]}
    atomic_write_text(out / "results.json", json.dumps(meta, indent=1, default=str) + "\n")
    atomic_write_text(out / "results.csv", csv_text(rows, settings))
    atomic_write_text(out / "results.md", markdown_table(rows, settings))
    if any(r.status == "ok" for r in rows):
        atomic_write_bytes(out / "results.png", chart_png(rows, settings))
