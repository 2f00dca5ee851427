"""Disk offload for the layer-sequential pipeline: each decoder layer's tensors live in a file of their own.

    model = sysq.offload.offload(model, "/scratch/70b-layers")      # or sysq.load(spec, offload="DIR")

The embeddings, final norm and head stay in host memory. Every persistent tensor of decoder layer i (its
state_dict) is written to DIR/layer-00000i.safetensors, and the layer's parameters and buffers become views of
that file mapped into memory (lazy safetensors loading): same shapes, dtypes and module structure, readable
anywhere (a report that reads one weight touches one page), holding no host memory until read.
`sysq.sequential.on_device` reads a layer's file straight into fresh tensors on the compute device, and after
the steps, when they may have changed the layer, writes whatever the layer's state_dict now is (quantized
modules hold codes and scales instead of weights) back to its file atomically and maps it again. The host
therefore holds the embeddings and head plus one layer in flight, whatever the depth; `sysq.save` streams the
tensors from the files into the saved folder (`write_safetensors`), never the whole model in memory.

Only the sequential path runs on an offloaded model (`sysq.sequential.choose_pipeline` says so and refuses
pipeline='memory'); steps that need the whole model in memory (measured auto, learned rounding, real-kernel
conversion) refuse it by name.
"""
from __future__ import annotations

import json
import logging
import os
import struct
from pathlib import Path

import torch
from torch import nn

from .arch import get_adapter
from .errors import SysqError
from .io import atomic_file

log = logging.getLogger(__name__)

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
_NAMES = {v: k for k, v in _DTYPES.items()}
_CHUNK = 64 << 20        # bytes per read when a tensor is copied from file to file


# ---- safetensors files, read and written one tensor at a time --------------------------------------------------
def read_header(path) -> tuple[dict, int]:
    """(the safetensors header: name -> {dtype, shape, data_offsets}, the byte where the data starts)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


def map_file(path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file as views of the file mapped into memory (shared: nothing is read until a
    page is touched, and the pages are the file's)."""
    header, start = read_header(path)
    size = os.path.getsize(path)
    data = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage.from_file(str(path), True, size))
    out = {}
    for name, h in header.items():
        b, e = h["data_offsets"]
        dtype = _DTYPES[h["dtype"]]
        raw = data[start + b:start + e]
        out[name] = (raw.view(dtype) if raw.numel() else torch.empty(0, dtype=dtype)).view(h["shape"])
    return out


def read_file(path, device) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file read into fresh tensors on `device` (plain reads: no mapping stays)."""
    header, start = read_header(path)
    out = {}
    with open(path, "rb", buffering=0) as f:
        for name, h in header.items():
            b, e = h["data_offsets"]
            t = torch.empty(h["shape"], dtype=_DTYPES[h["dtype"]])
            f.seek(start + b)
            if e > b:
                f.readinto(memoryview(t.view(-1).view(torch.uint8).numpy()))
            out[name] = t.to(device)
    return out


def _source(t: torch.Tensor) -> tuple[str, int] | None:
    """(file, byte offset) when `t` is a contiguous view of a mapped file, else None."""
    filename = getattr(t.untyped_storage(), "filename", None)
    if not filename or t.device.type != "cpu" or not t.is_contiguous():
        return None
    return filename, t.storage_offset() * t.element_size()


def write_safetensors(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """A safetensors file loadable by safetensors.torch.load_file, written one tensor at a time: a tensor that is a
    view of a mapped file (an offloaded layer) is copied from that file in chunks, so it is never in memory whole;
    any other tensor is written from memory (moved to the CPU one at a time). Not atomic: write into a temporary
    folder or file."""
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))     # keeps every offset aligned
    header, offset = {}, 0
    for k in order:
        t = tensors[k]
        n = t.numel() * t.element_size()
        header[k] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = metadata
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-(8 + len(blob)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for k in order:
            t = tensors[k].detach()
            src = _source(t)
            if src is not None:
                _copy_range(src[0], src[1], t.numel() * t.element_size(), f)
            elif t.numel():
                f.write(t.to("cpu").contiguous().view(-1).view(torch.uint8).numpy().data)


def _copy_range(src: str, start: int, n: int, out) -> None:
    with open(src, "rb") as f:
        f.seek(start)
        while n > 0:
            chunk = f.read(min(n, _CHUNK))
            out.write(chunk)
            n -= len(chunk)


def _write_atomic(path: Path, tensors: dict) -> None:
    with atomic_file(path) as tmp:
        write_safetensors(tmp, tensors)


# ---- an offloaded model ----------------------------------------------------------------------------------------
def layer_file(module: nn.Module) -> Path | None:
    """The file behind an offloaded decoder layer (None: the layer is in memory)."""
    return getattr(module, "_sysq_offload_file", None)


def offload_dir(model: nn.Module) -> Path | None:
    """The folder holding `model`'s decoder layers (None: not offloaded)."""
    return getattr(model, "_sysq_offload", None)


def offload(model: nn.Module, folder) -> nn.Module:
    """Move every decoder layer's persistent tensors to DIR/layer-NNNNN.safetensors (views of the files stay in
    the layers); returns the model. The folder is created; layer files already there are replaced."""
    if getattr(model, "hf_device_map", None):
        raise SysqError("this model is placed by accelerate (hf_device_map); sysq's offload moves plain models: load "
                        "it without device_map (sysq.load(spec, offload=DIR))")
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    for i, layer in enumerate(get_adapter(model).layers()):
        offload_layer(layer, folder / f"layer-{i:05d}.safetensors")
    object.__setattr__(model, "_sysq_offload", folder)
    log.info("offload: %d decoder layers to %s", len(get_adapter(model).layers()), folder)
    return model


def offload_layer(layer: nn.Module, path: Path, tensors: dict | None = None) -> None:
    """Write `tensors` (default: the layer's state_dict) to `path` and make them the layer's tensors, as views."""
    object.__setattr__(layer, "_sysq_offload_file", Path(path))
    if tensors is not None:
        _write_atomic(Path(path), tensors)
    store(layer, write=tensors is None)


def store(layer: nn.Module, write: bool = True) -> None:
    """Back to rest: write the layer's state_dict to its file (write=False: the file is current) and make its
    persistent tensors views of the file; its other tensors (non-persistent buffers) go to the CPU."""
    path = layer_file(layer)
    if write:
        _write_atomic(path, {k: t.detach() for k, t in layer.state_dict().items()})
    layer.load_state_dict(map_file(path), strict=True, assign=True)
    layer.to("cpu")                 # non-persistent buffers; also drops per-module caches (QuantLinear's weight)


def fetch(layer: nn.Module, device) -> None:
    """The layer's tensors read from its file into fresh tensors on `device` (the rest moved there)."""
    tensors = read_file(layer_file(layer), device)
    unexpected = layer.load_state_dict(tensors, strict=False, assign=True).unexpected_keys
    if unexpected:
        raise SysqError(f"{layer_file(layer)} holds tensors the layer does not have ({unexpected[:4]}); the offload "
                        "folder belongs to another model: offload this model again")
    layer.to(device)

