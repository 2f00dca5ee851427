"""Save and reload a quantized model.

A sysq folder holds:
  config.json             the model config, with quantization_config {"quant_method": "sysq", ...} for the record
  sysq_model.safetensors  integer weights (INT8 codes as int8, INT4 packed two per byte as uint8), scales, zero
                          points, static activation scales, preserved channels, and every float tensor
  sysq_quant.json         format version, per-module quantizer specs, KV spec, tied-weight aliases
  recipe.yaml             the recipe
  tokenizer files

Plain `from_pretrained` on the folder fails loudly: transformers skips the unknown quant_method "sysq" with a
warning, then finds no model.safetensors / pytorch_model.bin and raises OSError. We chose this over writing a
model.safetensors that transformers would load with missing weights re-initialised at random (silent garbage).
`sysq.load(folder)` reads it back through load_quantized and gives identical logits.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..arch import get_adapter
from ..errors import SysqError
from ..io import atomic_dir
from ..offload import write_safetensors
from .fuse import is_fused
from .kernels import RealLinear
from .kv import add_kv_quant, kv_spec
from .linear import QuantLinear
from .recipes import KVSpec, QuantSpec, Recipe

log = logging.getLogger(__name__)

FORMAT = "sysq-quant-v1"
WEIGHTS = "sysq_model.safetensors"
META = "sysq_quant.json"
BUFFERS = ("qweight", "w_scale", "w_zero", "w_keep", "w_keep_scale", "act_scale", "act_zero", "preserve_channels")


def is_sysq_folder(path) -> bool:
    return (Path(path) / META).is_file()


def _spec_dict(s):
    if s is None:
        return None
    d = asdict(s)
    d["preserve_positions"] = list(d.get("preserve_positions", ()))
    return d


def _spec(d, cls):
    if d is None:
        return None
    if "preserve_positions" in d:
        d = {**d, "preserve_positions": tuple(d["preserve_positions"])}
    return cls(**d)


def _modules(model):
    adapter = get_adapter(model)
    return adapter.linear_refs() + [adapter.lm_head_ref()]


def _online_transforms(model, tensors: dict) -> dict:
    """Input transforms hooked on a linear (mitigation's online Hadamard rotation) are part of the function:
    store their matrices so load can re-hook them; refuse any other kind rather than save a wrong model."""
    found = {}
    for ref in _modules(model):
        for hook in getattr(ref.module, "_forward_pre_hooks", {}).values():
            if not getattr(hook, "carry_over", False):
                continue
            if type(hook).__name__ != "OnlineRotation" or ref.name in found:
                raise SysqError(f"{ref.name} carries an input transform ({type(hook).__name__}) that sysq.save cannot "
                                "store; save before adding it, or extend sysq/quant/io.py")
            for i, a in enumerate(hook.mats):
                tensors[f"{ref.name}.online_rotation.{i}"] = a.detach().float().contiguous().cpu()
            found[ref.name] = len(hook.mats)
    return found


FORMATS = ("sysq", "compressed-tensors")


def save(model, path, tokenizer=None, format: str = "sysq", extra: dict[str, str] | None = None) -> Path:
    """Write a quantized (or float) model to `path` atomically; returns the folder.

    format "sysq": anything sysq simulates, reloaded by sysq.load with identical logits (plan.yaml beside it when
    the model was mitigated). "compressed-tensors": what vLLM and plain transformers load (sysq/quant/export.py);
    refuses by name what that format cannot carry. `extra`: more text files (name -> content) for the folder."""
    if format not in FORMATS:
        raise SysqError(f"unknown save format {format!r}; use one of {', '.join(FORMATS)}")
    if is_fused(model):
        raise SysqError("this model's projections are fused (sysq.quant.fuse: a runtime conversion for serving); "
                        "save the model before fusing, then fuse again after sysq.load")
    if format == "compressed-tensors":
        from .export import export_compressed_tensors
        return export_compressed_tensors(model, path, tokenizer, extra)
    path = Path(path)
    recipe: Recipe | None = getattr(model, "_sysq_recipe", None)
    modules, tensors = {}, {}
    quantized = set()
    for ref in _modules(model):
        m = ref.module
        if isinstance(m, RealLinear):
            raise SysqError(f"{ref.name} runs a real kernel ({m.kernel}); save the simulated model (same codes, "
                            "backend 'fake') and run sysq.quant.convert(model) after sysq.load")
        if not isinstance(m, QuantLinear):
            if type(m).__module__.startswith("bitsandbytes"):
                raise SysqError(f"{ref.name} is a bitsandbytes module; sysq.save stores sysq recipes only. "
                                "Quantize with a sysq recipe (e.g. w8a16, w4a16) to save")
            continue
        if not m.quantized:
            raise SysqError(f"{ref.name} is wrapped but not quantized yet; finish sysq.quantize before saving")
        modules[ref.name] = dict(weight=_spec_dict(m.weight_spec), act=_spec_dict(m.act_spec), ragged=m.ragged,
                                 packed=m.packed, preserve_channels_bits=m.preserve_channels_bits,
                                 in_features=m.in_features, out_features=m.out_features, bias=m.bias is not None)
        quantized.add(ref.name)
    online = _online_transforms(model, tensors)
    state = model.state_dict()
    seen, aliases = {}, {}
    for k, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.dtype, tuple(t.shape), t.storage_offset())
        if key in seen and t.numel() > 0:
            aliases[k] = seen[key]        # tied weights (lm_head = embed_tokens) are stored once
            continue
        seen[key] = k
        tensors[k] = t.detach()           # moved to the CPU one at a time by the writer
    kv = kv_spec(model)
    meta = dict(format=FORMAT, modules=modules, aliases=aliases, online_rotations=online, kv=asdict(kv) if kv else None,
                attn_implementation=getattr(model, "_sysq_prev_attn", model.config._attn_implementation),
                recipe=recipe.to_dict() if recipe is not None else None)

    with atomic_dir(path) as tmp:
        config = model.config.to_dict()
        config["quantization_config"] = {"quant_method": "sysq", "format": FORMAT,
                                         "recipe": recipe.name if recipe else None,
                                         "note": "load with sysq.load(folder); plain from_pretrained cannot"}
        config.pop("_attn_implementation_autoset", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
        write_safetensors(tmp / WEIGHTS, tensors, metadata={"format": FORMAT})   # streamed: offloaded layers too
        (tmp / META).write_text(json.dumps(meta, indent=1))
        if recipe is not None:
            (tmp / "recipe.yaml").write_text(recipe.to_yaml())
        plan = getattr(model, "_sysq_plan", None)
        if plan is not None:
            (tmp / "plan.yaml").write_text(plan.to_yaml())
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        write_extra(tmp, extra)
    log.info("saved %d quantized modules to %s", len(quantized), path)
    return path


def write_extra(folder: Path, extra: dict[str, str] | None) -> None:
    for name, text in (extra or {}).items():
        if Path(name).name != name:
            raise SysqError(f"extra file name {name!r} must be a plain file name")
        (folder / name).write_text(text)


def load_quantized(path, dtype=torch.float32):
    """(model, tokenizer) from a folder written by save()."""
    from transformers import AutoConfig, AutoTokenizer

    from ..arch import model_class

    path = Path(path)
    meta = json.loads((path / META).read_text())
    if meta.get("format") != FORMAT:
        raise SysqError(f"{path} holds sysq format {meta.get('format')!r}; this sysq reads {FORMAT}. "
                        "Re-save the model with this version")
    config = AutoConfig.from_pretrained(path)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._attn_implementation = meta.get("attn_implementation") or "sdpa"
    model = model_class(config).from_config(config, dtype=dtype)
    tensors = load_file(str(path / WEIGHTS))
    for ref in _modules(model):
        info = meta["modules"].get(ref.name)
        if info is None:
            continue
        q = QuantLinear(None, _spec(info["weight"], QuantSpec), _spec(info["act"], QuantSpec), ref.name,
                        info["ragged"], None, info["preserve_channels_bits"], info["in_features"],
                        info["out_features"], info["bias"])
        for b in BUFFERS:
            t = tensors.get(f"{ref.name}.{b}")
            if t is not None:
                setattr(q, b, t)
        q.packed = info["packed"]
        ref.replace(q)
    online = meta.get("online_rotations") or {}
    if online:
        from ..mitigate.rotate import OnlineRotation
        for ref in _modules(model):
            if ref.name in online:
                mats = [tensors.pop(f"{ref.name}.online_rotation.{i}") for i in range(online[ref.name])]
                h = ref.module.register_forward_pre_hook(OnlineRotation(mats))
                object.__setattr__(ref.module, "_sysq_online_handle", h)
    for k, src in meta["aliases"].items():
        tensors[k] = tensors[src]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if k not in meta["aliases"]]
    if missing or unexpected:
        raise SysqError(f"{path} does not match the model built from its config (missing {missing[:4]}, "
                        f"unexpected {unexpected[:4]}); the folder is corrupt or from another model")
    if meta.get("kv"):
        add_kv_quant(model, KVSpec(**meta["kv"]))
    if meta.get("recipe"):
        from .recipes import from_dict
        object.__setattr__(model, "_sysq_recipe", from_dict(meta["recipe"]))
    model.eval()
    tok = AutoTokenizer.from_pretrained(path) if (path / "tokenizer_config.json").is_file() else None
    return model, tok
