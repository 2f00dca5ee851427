"""KV-cache fake quantization, visible in a plain forward pass (perplexity), not only in generate().

We register an attention function with transformers' AttentionInterface that fake-quantizes key_states
and value_states as the attention consumes them (post-RoPE, [batch, kv_heads, seq, head_dim], exactly what
the cache holds; keys in a Hadamard basis with KVSpec.key_rotation), then calls the model's previous
implementation (sdpa or eager). Each attention module carries its KVSpec in `_sysq_kv`; a module without one
passes through unchanged.

    add_kv_quant(model, KVSpec(bits=4))     remove_kv_quant(model)   # restores the previous implementation
"""
from __future__ import annotations

import functools
import sys

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..arch import get_adapter
from ..errors import SysqError
from .math import fake_quantize_tensor
from .recipes import KVSpec

PREFIX = "sysq_kv_"
INNER = ("sdpa", "eager")


@functools.lru_cache(maxsize=None)
def _hadamard(n: int, device: torch.device) -> torch.Tensor:
    from ..mitigate.rotate import rotation
    return rotation(n).to(device=device, dtype=torch.float32)


def quantize_keys(k: torch.Tensor, spec: KVSpec) -> torch.Tensor:
    """The keys as the cache gives them back: quantize_kv, in a Hadamard basis when spec.key_rotation (float32:
    the rotation itself adds no error in bf16)."""
    if not spec.key_rotation:
        return quantize_kv(k, spec)
    h = _hadamard(k.shape[-1], k.device)
    return (quantize_kv(k.float() @ h, spec) @ h.T).to(k.dtype)


def quantize_kv(x: torch.Tensor, spec: KVSpec) -> torch.Tensor:
    """Fake-quantize [batch, heads, seq, head_dim]: per (head, token) over head_dim, or per (head, channel)
    over the sequence; the positions in spec.preserve_positions stay float."""
    if spec.granularity == "token":
        gran = "group" if spec.group_size else "token"
        xq = fake_quantize_tensor(x, spec.bits, spec.symmetric, gran, spec.group_size)
        seq = x.shape[-2]
        idx = [p % seq for p in spec.preserve_positions if -seq <= p < seq]
        if idx:
            xq[..., idx, :] = x[..., idx, :]
        return xq
    return fake_quantize_tensor(x.transpose(-1, -2), spec.bits, spec.symmetric, "token").transpose(-1, -2)


def _inner_fn(module, inner: str):
    if inner == "sdpa":
        return ALL_ATTENTION_FUNCTIONS["sdpa"]
    fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if fn is None:
        raise SysqError(f"{type(module).__name__} has no eager_attention_forward; use attn_implementation='sdpa'")
    return fn


def _make(inner: str):
    def attention(module, query, key, value, attention_mask, **kwargs):
        spec = getattr(module, "_sysq_kv", None)
        if spec is not None:
            key, value = quantize_keys(key, spec), quantize_kv(value, spec)
        return _inner_fn(module, inner)(module, query, key, value, attention_mask, **kwargs)
    return attention


def _register() -> None:
    for inner in INNER:
        if PREFIX + inner not in ALL_ATTENTION_FUNCTIONS._global_mapping:
            AttentionInterface.register(PREFIX + inner, _make(inner))
            AttentionMaskInterface.register(PREFIX + inner, ALL_MASK_ATTENTION_FUNCTIONS[inner])


def add_kv_quant(model, spec: KVSpec) -> None:
    """Quantize keys and values of every attention layer of `model` from now on (in place)."""
    _register()
    adapter = get_adapter(model)
    current = model.config._attn_implementation or "sdpa"
    inner = current.removeprefix(PREFIX)
    if inner not in INNER:
        raise SysqError(f"KV quantization wraps 'sdpa' or 'eager' attention; this model uses {current!r}. "
                        "Load it with attn_implementation='sdpa'")
    for i in range(adapter.num_layers):
        adapter.attention(i)._sysq_kv = spec
    if not current.startswith(PREFIX):
        model._sysq_prev_attn = current
        model.set_attn_implementation(PREFIX + inner)


def remove_kv_quant(model) -> None:
    adapter = get_adapter(model)
    for i in range(adapter.num_layers):
        adapter.attention(i).__dict__.pop("_sysq_kv", None)
    prev = model.__dict__.pop("_sysq_prev_attn", None)
    if prev is not None:
        model.set_attn_implementation(prev)


def kv_spec(model) -> KVSpec | None:
    return getattr(get_adapter(model).attention(0), "_sysq_kv", None)
