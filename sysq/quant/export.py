"""Export to compressed-tensors: the checkpoint format llm-compressor writes and vLLM and transformers read.

    sysq.export(model, "out/ct", tokenizer)        # after sysq.quantize (and sysq.mitigate)

One folder with config.json (quantization_config {"quant_method": "compressed-tensors", ...}) and
model.safetensors. The format follows from the model's quantizers (one config group per distinct scheme, each
listing its linears by exact name, so ragged group sizes and mixed schemes stay exact):

  int-quantized    int8 symmetric per-channel weights with int8 symmetric activations, static per tensor
                   (`input_scale`) or dynamic per token: `weight` int8, `weight_scale` [out, 1]
  pack-quantized   weight-only INT4 / INT8, per group or per channel, symmetric or asymmetric (integer zero
                   point): `weight_packed` int32, `weight_scale` [out, groups], `weight_zero_point` (packed),
                   `weight_shape`
  float-quantized  FP8 e4m3 weights per channel with FP8 activations, static or dynamic

The codes are sysq's own (packed with compressed-tensors' packer, never re-rounded), so a static-activation
model reloads with the logits sysq simulated. Mitigation that folds into weights (smoothing, clipping, the
residual and per-head rotations, GPTQ) is just weights here. What no engine runs is refused by name
(`unexportable`): the run-time preserved-token rule, preserved channels, sysq's KV-cache fake quantization, and
the online down_proj Hadamard (see `engine_online_rotation`). `sysq.plan(..., target="engine")` builds plans
without them.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..arch import get_adapter
from ..errors import SysqError
from ..io import atomic_dir
from .io import write_extra
from .kv import kv_spec
from .linear import QuantLinear

log = logging.getLogger(__name__)


def engine_online_rotation() -> bool:
    """Whether an exported checkpoint can carry an online input transform (the down_proj Hadamard).

    compressed-tensors describes one (`transform_config`, location "input"), but transformers' compressed-tensors
    loader (checked on 5.24) applies only the quantization config, so a model carrying it would load and run
    without the rotation: wrong outputs, silently. Until a loader applies it, the answer is no."""
    return False


def _quantizers(model) -> dict[str, QuantLinear]:
    ad = get_adapter(model)
    return {ref.name: ref.module for ref in ad.linear_refs() + [ad.lm_head_ref()] if isinstance(ref.module, QuantLinear)}


def unexportable(model) -> list[str]:
    """What in `model` a compressed-tensors checkpoint cannot carry, each with what to do instead (empty: ok)."""
    from ..mitigate.preserve import PrefixModel
    if isinstance(model, PrefixModel):
        return [f"{type(model).__name__} is a wrapper (the FP-prefix form of preserve-tokens: an FP key/value prefix "
                "no engine runs); quantize without the prefix, or plan with target='engine'"]
    qls = _quantizers(model)
    if not qls:
        return ["nothing is quantized: run sysq.quantize(model, recipe, calib) first"]
    why = []
    tokens = [n for n, q in qls.items() if q.act_spec is not None
              and (q.act_spec.preserve_threshold is not None or q.act_spec.preserve_positions)]
    if tokens:
        why.append(f"the run-time preserved-token rule ({len(tokens)} linears, e.g. {tokens[0]}): engines quantize "
                   "every token; plan with target='engine' (sysq quantize --target engine) or save with --format sysq")
    chans = [n for n, q in qls.items() if q.preserve_channels is not None]
    if chans:
        why.append(f"preserved input channels ({len(chans)} linears, e.g. {chans[0]}): mixed precision inside one "
                   "linear; plan with target='engine' or save with --format sysq")
    online = [ref.name for ref in get_adapter(model).linear_refs()
              if any(getattr(h, "carry_over", False) for h in getattr(ref.module, "_forward_pre_hooks", {}).values())]
    if online and not engine_online_rotation():
        why.append(f"the online down_proj Hadamard rotation ({len(online)} linears, e.g. {online[0]}): transformers' "
                   "compressed-tensors loader does not apply online transforms; plan with target='engine' (keeps the "
                   "rotations that fold into weights) or save with --format sysq")
    if get_adapter(model).converted:
        why.append(f"transformers builds {get_adapter(model).name}'s linears as Conv1D modules ([in, out] weights), which "
                   "compressed-tensors' loaders do not quantize (nn.Linear only): save with --format sysq")
    if kv_spec(model) is not None:
        why.append("sysq's KV-cache fake quantization (per-token asymmetric keys/values): no compressed-tensors KV "
                   "scheme matches it; quantize without +kv or save with --format sysq")
    for name, q in qls.items():
        reason = _scheme_problem(q)
        if reason:
            why.append(f"{name}: {reason}")
            break
    return why


def _scheme_problem(q: QuantLinear) -> str | None:
    w, a = q.weight_spec, q.act_spec
    if w is None:
        return "activation-only quantization has no compressed-tensors format; quantize weights too"
    if not q.quantized:
        return "wrapped but not quantized; finish sysq.quantize first"
    if getattr(w, "zero_point", "int") == "float":
        return ("a float zero point per group (Q4_1 / tinygemm layout) has no compressed-tensors form; "
                "use an integer zero point (the default) or save with --format sysq")
    if getattr(w, "type", "int") == "float":
        if a is not None and (getattr(a, "type", "int") != "float" or a.granularity not in ("token", "tensor")):
            return "FP8 weights export with FP8 activations (per token dynamic or per tensor static) or none"
        return None
    if a is None:
        return None if w.granularity in ("channel", "group") else \
            f"weight granularity {w.granularity!r}: export covers per-channel and per-group weights"
    if getattr(a, "type", "int") == "float":
        return "FP8 activations export with FP8 weights only"
    if not (w.bits == 8 and w.symmetric and w.granularity == "channel"):
        return ("weights and activations both quantized export as int8 W8A8 (int8 symmetric per-channel weights); "
                f"this layer has w{w.bits} {'sym' if w.symmetric else 'asym'} {w.granularity}")
    if not (a.bits == 8 and a.symmetric and a.granularity in ("token", "tensor")):
        return "activations export as int8 symmetric, per token (dynamic) or per tensor (static)"
    if a.dynamic and a.clip_ratio != 1.0:
        return "a clip ratio on dynamic activations: compressed-tensors computes dynamic scales from the full range"
    return None


def _args(spec, strategy: str, dynamic: bool, group_size=None) -> dict:
    typ = getattr(spec, "type", "int")
    d = {"num_bits": spec.bits, "type": typ, "symmetric": bool(spec.symmetric), "strategy": strategy,
         "dynamic": dynamic}
    if group_size:
        d["group_size"] = int(group_size)
    return d


def _scheme(q: QuantLinear, group_size: int | None) -> tuple[str, dict]:
    """(format, scheme dict without targets) for one quantized linear written with `group_size`."""
    w, a = q.weight_spec, q.act_spec
    strategy = "group" if group_size else "channel"
    weights = _args(w, strategy, False, group_size)
    acts = None
    if a is not None:
        acts = _args(a, "token" if a.dynamic else "tensor", a.dynamic)
    if getattr(w, "type", "int") == "float":
        return "float-quantized", {"weights": weights, "input_activations": acts}
    if a is not None:
        return "int-quantized", {"weights": weights, "input_activations": acts}
    return "pack-quantized", {"weights": weights, "input_activations": None}


def _tensors(q: QuantLinear, fmt: str, dtype: torch.dtype, group_size: int | None) -> dict[str, torch.Tensor]:
    """The linear's checkpoint tensors (local names) in compressed-tensors' layout, from sysq's codes. A group
    size smaller than the linear's repeats each (scale, zero) over the sub-groups: the same numbers, exactly."""
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    rep = (q.group_size // group_size) if group_size and q.group_size else 1
    scale = q.w_scale.reshape(q.out_features, -1).repeat_interleave(rep, dim=1)
    out = {"weight_scale": scale.to(dtype).contiguous()}
    if fmt == "pack-quantized":
        codes = q.codes().to(torch.int8)
        out["weight_packed"] = pack_to_int32(codes, q.weight_spec.bits)
        out["weight_shape"] = torch.tensor([q.out_features, q.in_features])
        if not q.weight_spec.symmetric:
            zero = q.w_zero.to(torch.int8).reshape(q.out_features, -1).repeat_interleave(rep, dim=1)
            out["weight_zero_point"] = pack_to_int32(zero, q.weight_spec.bits, packed_dim=0).contiguous()
    else:
        out["weight"] = q.qweight.contiguous()
    a = q.act_spec
    if a is not None and not a.dynamic:
        out["input_scale"] = q.act_scale.reshape(1).to(dtype)
    return out


def export_compressed_tensors(model, path, tokenizer=None, extra: dict[str, str] | None = None) -> Path:
    """Write `model` (quantized by sysq, optionally mitigated) as a compressed-tensors folder; see the module doc.
    Raises SysqError naming everything in the model that the format cannot carry."""
    problems = unexportable(model)
    if problems:
        raise SysqError("cannot export to compressed-tensors:\n  - " + "\n  - ".join(problems))
    path = Path(path)
    qls = _quantizers(model)
    dtype = next(iter(model.parameters())).dtype
    # Ragged group sizes (a g128 recipe halves to g64 on 576-wide inputs) are written at the smallest one, so
    # one config group covers them: transformers' dequantizing loader reads a single dense scheme.
    g_min = min((q.group_size for q in qls.values() if q.group_size), default=None)
    groups: dict[str, dict] = {}
    formats, tensors = set(), {}
    for name, q in qls.items():
        g = g_min if q.group_size else None
        fmt, scheme = _scheme(q, g)
        formats.add(fmt)
        key = json.dumps(scheme, sort_keys=True)
        groups.setdefault(key, {**scheme, "targets": []})["targets"].append(name)
        tensors.update({f"{name}.{k}": v.cpu() for k, v in _tensors(q, fmt, dtype, g).items()})
    if len(formats) > 1:
        raise SysqError(f"cannot export to compressed-tensors: the model mixes formats {sorted(formats)}; quantize "
                        "every linear with one kind of recipe")
    fmt = formats.pop()
    if len(groups) == 1:        # one scheme: target the class, as llm-compressor writes it
        only = next(iter(groups.values()))
        only["targets"] = ["Linear"]
    ad = get_adapter(model)
    shared = set()
    for k, v in model.state_dict().items():
        owner = k.rpartition(".")[0]
        if owner in qls and not k.endswith(".bias"):
            continue                                   # the quantizer's own buffers: written above
        if (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape)) in shared:
            continue                                   # tied (BERT's decoder bias): transformers re-ties it
        shared.add((v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape)))
        tensors.setdefault(k, v.detach().contiguous().cpu())
    head = ad.family.lm_head
    if getattr(model.config, "tie_word_embeddings", False):
        tensors.pop(head + ".weight", None)           # tied: transformers re-ties it on load
    # every float linear (the head, and an encoder head's transform): a one-scheme config targets the class
    ignore = [n for n, mod in model.named_modules() if isinstance(mod, torch.nn.Linear) and n not in qls]
    config = model.config.to_dict()
    config.pop("_attn_implementation_autoset", None)
    config["quantization_config"] = {
        "quant_method": "compressed-tensors", "format": fmt, "quantization_status": "compressed",
        "config_groups": {f"group_{i}": g for i, g in enumerate(groups.values())}, "ignore": ignore,
        "producer": {"name": "sysq", "version": _version()}}
    _validate(config["quantization_config"])
    plan = getattr(model, "_sysq_plan", None)
    with atomic_dir(path) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if plan is not None:
            (tmp / "plan.yaml").write_text(plan.to_yaml())
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        write_extra(tmp, extra)
    log.info("export: %d linears as compressed-tensors %s (%d scheme(s)) to %s", len(qls), fmt, len(groups), path)
    return path


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("sysq")
    except PackageNotFoundError:
        return "unknown"


def _validate(qconfig: dict) -> None:
    """compressed-tensors' own schema check of what we write (it is what transformers and vLLM parse)."""
    try:
        from compressed_tensors.quantization import QuantizationConfig
    except ImportError as e:   # pragma: no cover - a required dependency
        raise SysqError("compressed-tensors is not installed: pip install compressed-tensors") from e
    QuantizationConfig.model_validate({k: v for k, v in qconfig.items() if k != "producer"})


def load_with_transformers(path, dtype="float32", device=None, quiet: bool = False):
    """A compressed-tensors folder loaded by plain transformers (what a user without sysq does).

    Asymmetric pack-quantized folders (integer zero points, as llm-compressor also writes them) fail to load by
    default with transformers 5.24 + compressed-tensors 0.20.1 (the packed zero point meets an unpacked parameter:
    llm-compressor issues #1618, #1704); `CompressedTensorsConfig(dequantize=True)` loads them exactly, so it is
    used there."""
    import torch
    from transformers import AutoConfig, CompressedTensorsConfig

    from ..arch import model_class

    cfg = json.loads((Path(path) / "config.json").read_text())["quantization_config"]
    asym_packed = cfg.get("format") == "pack-quantized" and any(
        not g["weights"].get("symmetric", True) for g in cfg["config_groups"].values())
    kw = {"quantization_config": CompressedTensorsConfig(dequantize=True)} if asym_packed else {}
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    # compressed-tensors' bars are created with an explicit disable=False: only redirecting silences them
    with contextlib.redirect_stderr(io.StringIO()) if quiet else contextlib.nullcontext():
        model = model_class(AutoConfig.from_pretrained(path)).from_pretrained(path, dtype=dtype, **kw)
    return model.to(device).eval() if device else model.eval()
