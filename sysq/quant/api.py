"""One verb: quantize(model, recipe, calib) (torchao's quantize_ spirit), with one handler per backend.

    summary = sysq.quantize(model, "w8a8-static", calib)   # in place; returns what was done
    print(summary)

Handlers: "fake" (simulated QuantLinear: RTN or GPTQ weights, static or dynamic activations), the real
kernels "int8" / "fp8" / "int8-wo" / "int4-wo" (the simulated model, then convert(): each QuantLinear becomes
the module of sysq/quant/kernels.py that runs its codes), "bnb-int8" / "bnb-nf4" / "bnb-fp4" (bitsandbytes
modules). KV-cache quantization (recipe.kv) is added after any of them.

For mitigation, the steps are also public: prepare(model, recipe) wraps the linears (set
QuantLinear fields now), calibrate(model, calib) fixes static activation scales, quantize_weights(...)
rounds the weights. quantize() = the three plus the KV cache. convert(model) turns a simulated model
(e.g. one loaded from a sysq folder) into real-kernel modules that hold only the deployed weights.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn

from ..arch import get_adapter
from ..errors import SysqError
from ..offload import offload_dir
from ..sequential import choose_pipeline
from .backends import bnb_linear
from .fuse import ProjectionSlice, fuse_projections
from .gptq import gptq_model
from .kernels import MODULES, RealLinear
from .kv import add_kv_quant
from .learn import LearnConfig, learn_model
from .linear import QuantLinear
from .observers import run_model
from .recipes import REAL_BACKENDS, Recipe, get_recipe, real_backend

log = logging.getLogger(__name__)


@dataclass
class QuantSummary:
    recipe: str
    description: str
    schemes: dict = field(default_factory=dict)      # scheme -> number of modules
    bytes_before: int = 0
    bytes_after: int = 0
    seconds: float = 0.0
    calibration: dict | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def __str__(self) -> str:
        lines = [f"recipe {self.description}"]
        lines += [f"  {n:4d} x {scheme}" for scheme, n in sorted(self.schemes.items())]
        lines.append(f"  parameters+buffers: {self.bytes_before / 2**20:.1f} MiB -> {self.bytes_after / 2**20:.1f} MiB "
                     f"({self.seconds:.1f}s)")
        if self.calibration:
            c = {k: v for k, v in self.calibration.items() if k != "learned"}
            lines.append(f"  calibration: {c}")
            lw = self.calibration.get("learned")
            if lw:              # the learned step's cost, on its own line (issue 15: printed)
                attn = f" ({lw['attn_steps']} for the attention)" if lw.get("attn_steps") is not None else ""
                lines.append(f"  learned rounding: {lw['layers']} layers x {lw['steps_per_layer']} steps{attn} (batch "
                             f"{lw['batch_size']} of {lw['windows']} windows, loss {lw['loss']}, seed {lw['seed']}"
                             f"{', bf16 autocast' if lw.get('amp') else ''}): "
                             f"{lw['seconds']:.1f} s; kept in {lw['layers_kept']} layers")
        return "\n".join(lines)


def model_bytes(model: nn.Module) -> int:
    """Bytes of parameters and buffers (each storage once: tied embeddings count once), plus bitsandbytes
    4-bit quantization state (absmax) which lives outside the module's buffers."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = (t.untyped_storage().data_ptr(), t.dtype)
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
        qs = getattr(t, "quant_state", None)
        if qs is not None and getattr(qs, "absmax", None) is not None:
            total += qs.absmax.numel() * qs.absmax.element_size()
    return total


def _targets(model, r: Recipe):
    adapter = get_adapter(model)
    refs = [ref for ref in adapter.linear_refs() if ref.role not in r.skip and ref.name not in r.skip]
    if r.quantize_lm_head:
        refs.append(adapter.lm_head_ref())
    return refs


def scheme_of(module: nn.Module) -> str:
    if isinstance(module, QuantLinear):
        return module.extra_repr().split(" ", 1)[1].split(", ", 2)[2]
    if isinstance(module, RealLinear):
        return module.scheme()
    if isinstance(module, ProjectionSlice):
        return scheme_of(module.group.fused) + " (fused with the linears sharing its input)"
    return type(module).__name__


def prepare(model: nn.Module, recipe) -> list[QuantLinear]:
    """Wrap every target linear in a QuantLinear (float until calibrate / quantize_weights)."""
    r = get_recipe(recipe)
    out = []
    names = {ref.name for ref in _targets(model, r)}
    for field_ in ("preserve_channels", "act_clip_ratios"):
        unknown = set(getattr(r, field_)) - names
        if unknown:
            raise SysqError(f"{field_} names linears that are not quantized: {sorted(unknown)[:4]}; "
                            f"use dotted names such as {next(iter(names))}")
    for ref in _targets(model, r):
        if isinstance(ref.module, QuantLinear):
            raise SysqError(f"{ref.name} is already quantized; load the float model again to re-quantize")
        ql = QuantLinear(ref.module, r.weight, r.act_for(ref.name, ref.role), ref.name, r.ragged, r.preserve_channels.get(ref.name),
                         r.preserve_channels_bits)
        ref.replace(ql)
        out.append(ql)
    object.__setattr__(model, "_sysq_recipe", r)
    return out


def quant_linears(model: nn.Module) -> list[QuantLinear]:
    return [m for m in model.modules() if isinstance(m, QuantLinear)]


def calibrate(model: nn.Module, calib, quiet: bool = False) -> dict | None:
    """Static activation scales from calibration windows (float forward). Returns the settings used."""
    qls = [q for q in quant_linears(model) if q.act_spec is not None and not q.act_spec.dynamic]
    if not qls:
        return None
    if calib is None:
        raise SysqError("this recipe has static activation scales: pass calibration windows, e.g. "
                        "sysq.quantize(model, recipe, sysq.calibration(tokenizer, n=32))")
    with observing(qls):
        run_model(model, calib, quiet=quiet, desc="calibrating")
    return _calib_settings(calib)


@contextlib.contextmanager
def observing(qls: list[QuantLinear]):
    """The QuantLinears record their static activation ranges during the block (float forward), then fix them."""
    for q in qls:
        q.start_calibration()
    try:
        yield
    except BaseException:
        for q in qls:
            q.calibrating = False
        raise
    for q in qls:
        q.finish_calibration()


def _calib_settings(calib) -> dict:
    if hasattr(calib, "settings"):
        return calib.settings()
    ids = getattr(calib, "ids", calib)
    return {"windows": ids.shape[0], "seqlen": ids.shape[1]}


def quantize_weights(model: nn.Module, recipe, calib=None, quiet: bool = False) -> dict | None:
    """Round the weights (RTN, GPTQ or learned rounding); returns what learned rounding measured, else None."""
    r = get_recipe(recipe)
    info = None
    if r.method in ("gptq", "learned") and calib is None:
        raise SysqError(f"method {r.method} needs calibration windows: pass calib")
    if r.learn_act_clip and r.method != "learned":
        log.warning("%s: +actclip learns the activation clip ratios with learned rounding; the weights are rounded by "
                    "%s here, so the recipe's ratios stay as they are (add +learned, or use an auto plan for INT4)",
                    r.name, r.method)
    if r.method == "gptq":
        gptq_model(model, calib, r.gptq_block_size, r.gptq_damp, r.gptq_act_order, quiet=quiet)
    elif r.method == "learned":
        cfg = LearnConfig(r.learn_steps, r.learn_lr, r.learn_batch_size, r.learn_seed, loss=r.learn_loss,
                          amp=r.learn_amp, act_clip=r.learn_act_clip, attn_steps=r.learn_attn_steps)
        info = learn_model(model, calib, cfg, quiet=quiet).to_dict()
    for q in quant_linears(model):      # RTN (and any linear GPTQ or learning did not reach, e.g. lm_head)
        q.quantize_weight()
    return info


def with_plan(r: Recipe, plan) -> Recipe:
    """`r` with a mitigation plan's quantizer-side settings (idempotent; None: `r` unchanged)."""
    if plan is None:
        return r
    from ..mitigate.preserve import apply_to_recipe
    return apply_to_recipe(r, plan)


# ---- handlers, one per backend ---------------------------------------------------------------------

def _fake(model, r: Recipe, calib, quiet: bool, path=None) -> dict | None:
    prepare(model, r)
    if path is not None and path.sequential:        # one decoder layer at a time on path.device
        from .layerwise import quantize_layers
        quantize_layers(model, r, calib, path.device, quiet)
        static = any(q.act_spec is not None and not q.act_spec.dynamic for q in quant_linears(model))
        return _calib_settings(calib) if static or r.method == "gptq" else None
    settings = calibrate(model, calib, quiet)
    learned = quantize_weights(model, r, calib, quiet)
    if r.method in ("gptq", "learned"):
        settings = settings or _calib_settings(calib)
    if learned is not None:
        settings = {**settings, "learned": learned}
    return settings


def convert(model: nn.Module, backend: str | None = None, fuse: bool = False) -> int:
    """Replace every quantized QuantLinear by the real-kernel module that runs its codes (sysq/quant/kernels.py),
    built on the device the model is on; returns how many. backend: one of REAL_BACKENDS, or None for the
    kernel that fits each linear's quantizers. The float copy (the simulation's cache) goes with the twin.
    fuse: first stack the linears that share an input (q/k/v, gate/up) into one (sysq.quant.fuse), so decode
    runs one GEMV per group; a fused group counts once."""
    if backend is not None and backend not in REAL_BACKENDS:
        raise SysqError(f"backend {backend!r} is not a real kernel; allowed: {', '.join(REAL_BACKENDS)}")
    if fuse:
        fuse_projections(model)
    adapter = get_adapter(model)
    n = 0
    for ref in adapter.linear_refs() + [adapter.lm_head_ref()]:
        q, group = ref.module, None
        if isinstance(q, ProjectionSlice):     # a fused group: its linear converts once, the slices stay
            if q.index != 0:
                continue
            group, q = q.group, q.group.fused
        if not isinstance(q, QuantLinear):
            continue
        if not q.quantized:
            raise SysqError(f"{ref.name} is wrapped but not quantized; finish sysq.quantize before convert")
        real = MODULES[backend or real_backend(q.weight_spec, q.act_spec)](q)
        if group is None:
            ref.replace(real)
        else:
            group.fused = real
        n += 1
    if n == 0:
        raise SysqError("convert found no quantized linears: quantize the model first, e.g. "
                        "sysq.quantize(model, 'w4a16', calib) or load a sysq folder")
    own_memory(model)
    r = getattr(model, "_sysq_recipe", None)
    if r is not None and r.backend == "fake" and r.weight is not None:
        object.__setattr__(model, "_sysq_recipe", dataclasses.replace(r, backend=backend or real_backend(r.weight,
                                                                                                         r.act)))
    return n


@torch.no_grad()
def own_memory(model: nn.Module) -> None:
    """Copy the float tensors left outside the real modules (embeddings, norms, lm_head) into memory of their own.
    transformers loads safetensors checkpoints as views of the memory-mapped file; while one view lives, the
    whole mapping stays, with every float weight page quantization read resident. After this the process holds
    what model_bytes reports plus its working memory (tied tensors stay tied)."""
    copies = {}
    for m in model.modules():
        if isinstance(m, RealLinear):
            continue
        for store in (m._parameters, m._buffers):
            for k, t in store.items():
                if t is None or not t.is_floating_point() or t.device.type != "cpu":
                    continue
                key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
                if key not in copies:
                    copies[key] = t.data.clone()
                if isinstance(t, nn.Parameter):
                    if t.data.data_ptr() != copies[key].data_ptr():
                        t.data = copies[key]
                else:
                    store[k] = copies[key]


def _real(model, r: Recipe, calib, quiet: bool, path=None) -> dict | None:
    settings = _fake(model, r, calib, quiet, path)
    convert(model, r.backend)
    return settings


def _bnb(kind: str):
    def handler(model, r: Recipe, calib, quiet: bool, path=None):
        for ref in _targets(model, r):
            if not isinstance(ref.module, nn.Linear):
                raise SysqError(f"{ref.name} is already quantized; load the float model again")
            ref.replace(bnb_linear(ref.module, kind, r.bnb_threshold))
        return None
    return handler


HANDLERS = {"fake": _fake, **{b: _real for b in REAL_BACKENDS},
            "bnb-int8": _bnb("int8"), "bnb-nf4": _bnb("nf4"), "bnb-fp4": _bnb("fp4")}


def quantize(model: nn.Module, recipe, calib=None, quiet: bool = False, pipeline: str = "auto",
             device=None) -> QuantSummary:
    """Quantize `model` in place with `recipe` (preset name, YAML path, mapping or Recipe).

    A model that `sysq.mitigate` transformed carries its plan: the plan's quantizer-side settings (preserved
    tokens and channels, per-linear activation clip ratios, GPTQ rounding) are applied to `recipe` here, so
    `quantize(model, "w8a8-static", calib)` and `quantize(model, mitigate(...), calib)` build the same model.
    pipeline: "auto" | "memory" | "sequential" (sysq.sequential: one decoder layer at a time on `device`, for a
    model whose weights stay on the CPU); "auto" picks by where the weights are and says why in the log.
    """
    r = with_plan(get_recipe(recipe), getattr(model, "_sysq_plan", None))
    if offload_dir(model) is not None and r.backend != "fake":
        raise SysqError(f"backend {r.backend!r} builds its modules in host memory, and this model's layers are "
                        f"offloaded to {offload_dir(model)}: quantize with backend 'fake' (the same codes), sysq.save "
                        "the model, then sysq.load the folder where it fits and run sysq.quant.convert")
    path = None
    if r.backend in ("fake", "int8"):
        path = choose_pipeline(model, pipeline, device, whole="learned rounding" if r.method == "learned" else None)
        log.info("quantize: %s", path)
    start, before = time.perf_counter(), model_bytes(model)
    with torch.no_grad():
        settings = HANDLERS[r.backend](model, r, calib, quiet, path)
    if r.kv is not None:
        add_kv_quant(model, r.kv)
    object.__setattr__(model, "_sysq_recipe", r)
    counts = Counter(scheme_of(ref.module) for ref in _targets(model, r))
    if r.kv is not None:
        counts[f"kv{r.kv.bits} {'sym' if r.kv.symmetric else 'asym'} per {r.kv.granularity}"
               f"{' (keys Hadamard-rotated)' if r.kv.key_rotation else ''} (attention)"] = \
            get_adapter(model).num_layers
    summary = QuantSummary(r.name, r.describe(), dict(counts), before, model_bytes(model),
                           time.perf_counter() - start, settings)
    log.info("%s", summary)
    return summary
