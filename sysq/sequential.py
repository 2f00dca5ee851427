"""Layer-sequential calibration: one decoder layer on the compute device at a time.

llm-compressor's sequential pipeline, for every sysq step that calibrates (detect, the smoothing and
clipping searches, static activation scales, GPTQ). The model's weights stay where they are (the CPU);
the inputs of the first decoder layer are captured once for every calibration batch; then, layer by layer,
the layer moves to the device, each step observes it (forward hooks) and may change it (fold scales,
quantize weights), the layer computes its outputs, which become the next layer's inputs, and the layer
moves back. The next layer therefore sees what the already mitigated / quantized layer produces (as
GPTQ intends), and the device holds one layer, the calibration activations and a step's working state,
whatever the depth.

    path = choose_pipeline(model, "auto")                  # Path: memory | sequential, the device, and why
    run_layers(model, batches, [step], path.device)

A step is a callable `step(block)` given a Block: the layer on the device, its inputs (one tensor per batch),
what the model passes every layer besides the hidden states (mask, position embeddings), and
Block.forward() to run the layer over them. A step that computes the layer's outputs itself (while it
observes) puts them in `block.outputs`, so the runner does not run the layer again. Per-block searches
(learned rounding, clipping by block output error) plug in the same way: they read block.inputs, change
block.module and leave block.outputs for the next layer.

Choosing the path (`choose_pipeline`): a model whose weights are already on the compute device, or that accelerate
split over several devices (hf_device_map), runs in memory (whole-model forwards, statistics per batch); a
model on the CPU computed on an accelerator runs sequentially. sysq.load(..., device="cuda") keeps a model
on the CPU when it does not fit in the device's free memory, so such a model takes the sequential path.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from . import offload
from .arch import get_adapter
from .errors import SysqError

log = logging.getLogger(__name__)

PIPELINES = ("auto", "memory", "sequential")


# ---- which path -------------------------------------------------------------------------------------------
@dataclass
class Path:
    kind: str                 # "memory" | "sequential"
    device: torch.device      # where the work runs
    reason: str

    @property
    def sequential(self) -> bool:
        return self.kind == "sequential"

    def __str__(self) -> str:
        return f"{self.kind} pipeline on {self.device} ({self.reason})"


def tensor_bytes(module: nn.Module, mapped: bool = True) -> int:
    """Bytes of a module's parameters and buffers (shared storages once); mapped=False leaves out the tensors that
    are views of files (offloaded layers: sysq.offload), i.e. counts what is in host memory."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if t.device.type == "meta" or t.untyped_storage().data_ptr() in seen:
            continue
        if not mapped and getattr(t.untyped_storage(), "filename", None):
            continue
        seen.add(t.untyped_storage().data_ptr())
        total += t.numel() * t.element_size()
    return total


def model_devices(model: nn.Module) -> set[torch.device]:
    devs = {p.device for p in model.parameters() if p.device.type != "meta"}
    split = getattr(model, "hf_device_map", None)
    if split:
        devs |= {torch.device(f"cuda:{d}" if isinstance(d, int) else d) for d in split.values()
                 if d not in ("disk", "meta")}
    return devs


def default_device(model: nn.Module, devs: set[torch.device] | None = None) -> torch.device:
    """Where calibration work runs when no device is given: the model's device, or the GPU for a CPU model.
    devs: model_devices(model), when the caller has it."""
    devs = model_devices(model) if devs is None else devs
    if devs == {torch.device("cpu")} and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return next(iter(devs)) if len(devs) == 1 else torch.device("cpu")


def free_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return None


def choose_pipeline(model: nn.Module, pipeline: str = "auto", device=None, whole: str | None = None) -> Path:
    """Which calibration path runs, where, and why (logged by the steps that use it). whole: a step that needs the
    whole model in memory (measured auto, learned rounding), named: under "auto" a model in host memory then runs
    where its weights are instead of layer by layer on the GPU."""
    if pipeline not in PIPELINES:
        raise SysqError(f"unknown pipeline {pipeline!r}; use one of {', '.join(PIPELINES)}")
    devs = model_devices(model)        # one walk of the parameters (~2 ms at 8B on a GPU host)
    device = _device(device) if device is not None else default_device(model, devs)
    split = len(devs) > 1
    folder = offload.offload_dir(model)
    if folder is not None:
        if pipeline == "memory":
            raise SysqError(f"the decoder layers are offloaded to {folder}; the in-memory path would read every "
                            "layer into host memory: use pipeline='sequential' (or 'auto'), or load the model "
                            "without offload")
        return Path("sequential", device, f"the decoder layers are offloaded to {folder}; the rest "
                                          f"({tensor_bytes(model, mapped=False) / 2**30:.2f} GiB) stays on the host; "
                                          f"one layer at a time on {device}")
    if "disk" in (getattr(model, "hf_device_map", None) or {}).values() and pipeline == "sequential":
        raise SysqError("accelerate offloaded part of this model to disk (device_map with 'disk'); the sequential "
                        "pipeline reads offloaded layers from its own files: load the model with "
                        "sysq.load(spec, offload=DIR) (or sysq.offload.offload(model, DIR) on a model in memory)")
    if pipeline == "sequential":
        if split or getattr(model, "hf_device_map", None):
            raise SysqError("the sequential pipeline moves decoder layers itself; this model is placed by "
                            "accelerate (hf_device_map): use pipeline='memory', or load it on the CPU")
        return Path("sequential", device, "asked for")
    if pipeline == "memory":
        return Path("memory", next(iter(devs)) if len(devs) == 1 else device, "asked for")
    if split:
        return Path("memory", device, f"accelerate split the model over {', '.join(sorted(map(str, devs)))}")
    here = next(iter(devs))
    if _same(here, device):
        return Path("memory", here, f"the weights are on {here}")
    if whole is not None:
        return Path("memory", here, f"{whole} needs the whole model: it runs where the weights are (load the model "
                                    f"on {device} to run it there)")
    size = tensor_bytes(model)
    layer = tensor_bytes(get_adapter(model).layers()[0])
    return Path("sequential", device, f"the weights ({size / 2**30:.2f} GiB) stay on {here}; one decoder layer "
                                      f"({layer / 2**30:.2f} GiB) at a time on {device}")


def fits(model: nn.Module, device, margin: float = 0.8) -> bool:
    """Whether the model's weights fit in `margin` of the device's free memory (always True on the CPU)."""
    free = free_bytes(_device(device))
    return free is None or tensor_bytes(model) <= margin * free


def _device(d) -> torch.device:
    d = torch.device(d)
    if d.type == "cuda" and d.index is None:
        d = torch.device("cuda", torch.cuda.current_device())
    return d


def _same(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index or 0) == (b.index or 0)


# ---- moving one layer -------------------------------------------------------------------------------------
@contextlib.contextmanager
def on_device(module: nn.Module, device: torch.device, write_back: bool = True):
    """`module` on `device` for the block; then back where it was. write_back=False (a step that only reads):
    the original tensors are put back instead of copying the device ones. A layer offloaded to disk
    (sysq.offload) is read from its file onto `device`, and written back to it afterwards when write_back."""
    if offload.layer_file(module) is not None:
        offload.fetch(module, device)
        try:
            yield module
        finally:
            offload.store(module, write=write_back)
        return
    src = next((p.device for p in module.parameters()), device)
    saved = None if write_back else _tensor_slots(module)
    module.to(device)
    try:
        yield module
    finally:
        if saved is None:
            module.to(src)          # also drops per-module caches (QuantLinear's dequantized weight)
        else:
            for mod, kind, name, t in saved:
                if kind == "param":
                    mod._parameters[name].data = t
                else:
                    mod._buffers[name] = t


def _tensor_slots(module: nn.Module) -> list[tuple]:
    out = []
    for mod in module.modules():
        out += [(mod, "param", n, p.data) for n, p in mod._parameters.items() if p is not None]
        out += [(mod, "buffer", n, b) for n, b in mod._buffers.items() if b is not None]
    return out


def to_device(obj, device):
    """Tensors inside tuples, lists and dicts moved to `device` (anything else as is; device None: nothing moves)."""
    if device is None:
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(to_device(o, device) for o in obj)
    if isinstance(obj, list):
        return [to_device(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


# ---- the calibration activations and one block ---------------------------------------------------------------
def no_context(_b: int):
    return contextlib.nullcontext()


@dataclass
class Block:
    """One decoder layer on the compute device with the calibration activations at its input."""

    index: int
    module: nn.Module
    inputs: list[torch.Tensor]                  # per batch: hidden states [b, T, C] entering the layer
    args: list[tuple]                           # per batch: positional arguments after the hidden states
    kwargs: list[dict]                          # per batch: keyword arguments (mask, position embeddings, ...)
    context: Callable = no_context              # context(b): entered around batch b's forward (e.g. eager attention)
    outputs: list[torch.Tensor] | None = None   # what the next layer reads; the runner fills it when a step did not
    state: dict = field(default_factory=dict)   # steps may leave notes for later steps of the same layer

    @torch.no_grad()
    def forward(self, inputs: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Run the layer over every batch of `inputs` (default: the block's own inputs)."""
        outs = []
        for b, x in enumerate(self.inputs if inputs is None else inputs):
            with self.context(b):
                out = self.module(x, *self.args[b], **self.kwargs[b])
            outs.append(out[0] if isinstance(out, tuple) else out)
        return outs


class _Stop(Exception):
    pass


@torch.no_grad()
def capture(model: nn.Module, batches: list[torch.Tensor], device, context: Callable = no_context):
    """Inputs of the first decoder layer for each batch of token ids, on `device` (None: where the embeddings put
    them): (hidden states, positional arguments, keyword arguments) lists. The embeddings run where they are;
    nothing after layer 0 runs."""
    ad = get_adapter(model)
    box = {}

    def catch(mod, args, kwargs):
        if args:
            box["h"], box["args"] = args[0], args[1:]
        else:
            box["h"], box["args"] = kwargs.pop("hidden_states"), ()
        box["kwargs"] = kwargs
        raise _Stop

    handle = ad.layers()[0].register_forward_pre_hook(catch, with_kwargs=True)
    base = getattr(model, "base_model", model)
    emb_device = ad.embeddings()[0].weight.device
    hidden, args, kwargs = [], [], []
    try:
        for b, ids in enumerate(batches):
            with context(b):
                try:
                    base(input_ids=ids.to(emb_device), use_cache=False)
                except _Stop:
                    pass
            hidden.append(to_device(box["h"], device))
            args.append(to_device(box["args"], device))
            kwargs.append(to_device(box["kwargs"], device))
    finally:
        handle.remove()
    return hidden, args, kwargs


def batches_of(calib, batch_size: int) -> list[torch.Tensor]:
    ids = getattr(calib, "ids", calib)
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[0] == 0:
        raise SysqError("calibration data must be a non-empty sysq Windows or a LongTensor [n, seqlen]; "
                        "get one with sysq.calibration(tokenizer, n=32)")
    return [ids[i:i + batch_size] for i in range(0, ids.shape[0], batch_size)]


@torch.no_grad()
def run_layers(model: nn.Module, batches: list[torch.Tensor], steps: list[Callable], device,
               context: Callable = no_context, read_only: bool = False, quiet: bool = False,
               desc: str = "layers") -> list[torch.Tensor]:
    """Apply `steps` to each decoder layer in turn, on `device`, carrying the calibration activations from layer
    to layer. device None: every layer stays where it is (a model in memory, or split by accelerate, whose hooks
    move the activations). read_only: the steps change no weight, so nothing is copied back. Returns the last
    layer's outputs."""
    device = None if device is None else _device(device)
    ad = get_adapter(model)
    hidden, args, kwargs = capture(model, batches, device, context)
    layers = ad.layers()
    timed = log.isEnabledFor(logging.DEBUG)
    for i in tqdm(range(len(layers)), desc=desc, disable=quiet, leave=False):
        t = time.perf_counter()
        place = contextlib.nullcontext() if device is None else on_device(layers[i], device, not read_only)
        with place:
            block = Block(i, layers[i], hidden, args, kwargs, context)
            for step in steps:
                step(block)
            hidden = block.outputs if block.outputs is not None else block.forward()
        if timed:                               # waits for the device: only when someone reads the log
            _synchronize(device)
            log.debug("layer %d: %.4f s (%s)", i, time.perf_counter() - t, desc)
    return hidden


def _synchronize(device) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
