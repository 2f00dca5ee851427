"""Decode attention: one kernel per layer for a decode step, grouped-query attention read in place.

At batch 1 a decode step is hundreds of small kernels, each costing its launch gap inside the CUDA graph.
transformers' sdpa path, compiled, spends five per layer on attention for a static cache: the cache expanded
to the query heads (repeat_kv copies K and V), the boolean mask turned into the fused kernel's bias, the
query's rotary embedding, and the attention itself. `sysq_decode` is an attention implementation registered
the transformers way (AttentionInterface, with sdpa's mask function under the same name): when the query is
one token it runs one Triton kernel (sysq/_attention_triton.py) that reads K and V where the cache holds
them, each KV head once for all the query heads that share it, and applies the boolean mask the model built
once per forward; everything else (prefill, training, dropout, soft-capping, attention sinks, float masks, devices
without the kernel) goes to transformers' sdpa attention, unchanged.

    sysq.attention.enable(model)      # model.config's attention implementation becomes "sysq_decode"
    cache = sysq.attention.static_cache(model, max_len)   # a StaticCache whose layers share one length counter

transformers' StaticCache keeps a length counter per layer and advances each in place, one more one-element
kernel per layer per step; `static_cache` gives the full-attention layers one counter, advanced by the last of
them (same positions, same cache tensors, otherwise transformers' StaticCache).

The kernel is a torch.library custom op (`sysq::decode_attention`), so torch.compile keeps it in its graph
and CUDA graphs capture it. On the CPU it runs only in Triton's interpreter (TRITON_INTERPRET=1), for tests.
"""
from __future__ import annotations

import functools
import os

import torch

from .arch import get_adapter

NAME = "sysq_decode"
# The GPU launch, measured on one H200 (scripts/bench_decode_kernels.py, call A11 of the eleventh session: B=1, 32 / 8
# heads, D=128, bf16): 128 keys per iteration with 3 pipelining stages was the fastest per program at every cache
# length tried (96 to 2080 keys); one program per KV head leaves most of the GPU idle, so caches over 2 *
# KEYS_PER_SPLIT keys are split and the slices merged by one combine kernel (8B decode step: 8.1 us a layer before,
# 3.8 + 1.5 after, calls D11 / E11).
BLOCK_L = 128           # keys per iteration (GPU); the interpreter takes 16
NUM_WARPS = 4
NUM_STAGES = 3          # as many as one K and one V tile per stage fit in shared memory (launch_config)
KEYS_PER_SPLIT = 64     # caches longer than a block are split over programs, one slice per this many keys


@torch.compiler.assume_constant_result     # asked while tracing a forward: decided once, outside the graph
def available(device) -> bool:
    """Whether the kernel runs on `device`: CUDA with Triton, or the CPU under TRITON_INTERPRET=1 (Triton's
    interpreter: slow, for tests). SYSQ_DECODE_ATTENTION=0 sends every call to sdpa."""
    from .quant.gemv import triton_runs_on
    return os.environ.get("SYSQ_DECODE_ATTENTION", "1") != "0" and triton_runs_on(device)


def splits(batch: int, kv_heads: int, length: int) -> int:
    """Slices of the keys: 1 up to 2 * KEYS_PER_SPLIT keys, else one per KEYS_PER_SPLIT keys (at most 32, and about 256
    programs): one program per KV head streams a longer cache alone while the rest of the GPU idles."""
    if length <= 2 * KEYS_PER_SPLIT:
        return 1
    return max(1, min(-(-length // KEYS_PER_SPLIT), 256 // max(1, batch * kv_heads), 32))


def _pow2(n: int, least: int) -> int:
    return max(least, 1 << (n - 1).bit_length())


def launch_config(batch: int, kv_heads: int, length: int, device, head_dim: int = 128, itemsize: int = 2) -> dict:
    """How the kernel runs over a cache of `length` keys: BLOCK_L (keys per iteration; 16 in the interpreter),
    SPLIT (slices of the keys: splits()) and, on the GPU, num_warps and num_stages: NUM_STAGES, fewer (then a
    smaller BLOCK_L) where a K and a V tile per stage would not fit the GPU's shared memory (fp32 caches, wide
    heads, smaller GPUs). scripts/bench_decode_kernels.py measures the alternatives on a GPU."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return dict(BLOCK_L=16, SPLIT=splits(batch, kv_heads, length))
    smem, dp = _shared_memory(dev.index if dev.index is not None else torch.cuda.current_device()), _pow2(head_dim, 16)
    cfg = dict(BLOCK_L=BLOCK_L, num_warps=NUM_WARPS, num_stages=NUM_STAGES)
    while cfg["num_stages"] * 2 * cfg["BLOCK_L"] * dp * itemsize > smem and (smaller := _smaller(cfg)):
        cfg = smaller
    s = splits(batch, kv_heads, length)
    block = min(cfg["BLOCK_L"], _pow2(-(-length // s), 16))   # a slice's keys in one iteration where they fit
    return dict(cfg, BLOCK_L=block, SPLIT=s)


@functools.lru_cache(maxsize=None)
def _shared_memory(index: int) -> int:
    """Bytes of shared memory one program may use on CUDA device `index` (opt-in maximum), with room for the
    kernel's own buffers."""
    props = torch.cuda.get_device_properties(index)
    return int(0.85 * getattr(props, "shared_memory_per_block_optin", 48 * 1024))


def launch_decode(q, k, v, mask, scale: float, config: dict):
    """Launch the kernel with `config` (launch_config's keys; num_warps / num_stages are ignored off the GPU) on
    q [B, H, 1, D], k, v [B, Hkv, L, D] (last dim contiguous), mask bool [B, L] or None. Returns (out, part, m, l):
    with SPLIT 1 `out` [B, 1, H, D] holds the result; else the float32 slices for combine_decode."""
    from triton.runtime.errors import OutOfResources

    from ._attention_triton import kernel
    b, h, _, d = q.shape
    hkv, length = k.shape[1], k.shape[2]
    s = config["SPLIT"]
    out = torch.empty((b, 1, h, d), dtype=q.dtype, device=q.device)
    if s == 1:
        part, m, l_ = out, out, out
        so = (0, h * d, d)
    else:
        part = torch.empty((s, b, h, d), dtype=torch.float32, device=q.device)
        m = torch.empty((s, b, h), dtype=torch.float32, device=q.device)
        l_ = torch.empty_like(m)
        so = (b * h * d, h * d, d)
    sm = (mask.stride(0), mask.stride(1)) if mask is not None else (0, 0)
    launch = {key: config[key] for key in ("num_warps", "num_stages") if key in config and q.device.type == "cuda"}
    launch["BLOCK_L"] = config["BLOCK_L"]
    key = (q.device, q.dtype, d, launch.get("num_stages"), launch["BLOCK_L"])
    launch.update(_SHRUNK.get(key, {}))
    args = (q, k, v, mask if mask is not None else q, part, m, l_, length, b * h, float(scale),
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
            *sm, *so)
    consts = dict(HKV=hkv, G=h // hkv, GP=_pow2(h // hkv, 16), D=d, DP=_pow2(d, 16), SPLIT=s,
                  HAS_MASK=mask is not None, PRECISION="ieee" if q.dtype == torch.float32 else "tf32")
    while True:
        try:
            kernel()[(b * hkv, s)](*args, **consts, **launch)
            return out, part, m, l_
        except OutOfResources:
            smaller = _smaller(launch)
            if smaller is None:
                raise
            launch = _SHRUNK[key] = smaller


# launch_config's shared-memory estimate is the K and V tiles only; where the compiled kernel needs more than the
# GPU has (fp32 caches, other GPUs: not measured), the first launch fails before anything runs and the next smaller
# config (_smaller, the same steps launch_config takes) is used and kept for later calls of that dtype and head size
_SHRUNK: dict = {}


def _smaller(launch: dict) -> dict | None:
    """One pipelining stage fewer, else half the keys per iteration (down to 16); None when neither is left."""
    if launch.get("num_stages", 1) > 1:
        return {**launch, "num_stages": launch["num_stages"] - 1}
    if launch["BLOCK_L"] > 16:
        return {**launch, "BLOCK_L": launch["BLOCK_L"] // 2}
    return None


def combine_decode(part, m, l_, dtype) -> torch.Tensor:
    """The attention output [B, 1, H, D] in `dtype` from SPLIT slices (flash-decoding), in one kernel: part [S, B, H, D]
    the unnormalised outputs, m and l [S, B, H] their score maxima and exp-sums."""
    from ._attention_triton import combine_kernel
    s, b, h, d = part.shape
    out = torch.empty((b, 1, h, d), dtype=dtype, device=part.device)
    combine_kernel()[(b * h,)](part, m, l_, out, b * h, S=s, SP=_pow2(s, 2), D=d, DP=_pow2(d, 16))
    return out


def decode_attention(q, k, v, mask, scale: float, config: dict) -> torch.Tensor:
    """The op's work with an explicit launch config (launch_config's form): the kernel, and the combine of its
    slices where SPLIT > 1. [B, 1, H, D] in q's dtype."""
    out, part, m, l_ = launch_decode(q, k, v, mask, scale, config)
    return out if config["SPLIT"] == 1 else combine_decode(part, m, l_, q.dtype)


@torch.library.custom_op("sysq::decode_attention", mutates_args=())
def decode_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                        scale: float) -> torch.Tensor:
    """q [B, H, 1, D], k, v [B, Hkv, L, D], mask bool [B, L] or None -> [B, 1, H, D] in q's dtype."""
    b, hkv, length = q.shape[0], k.shape[1], k.shape[2]
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    return decode_attention(q, k, v, mask, scale, launch_config(b, hkv, length, q.device, q.shape[-1],
                                                                 q.element_size()))


@decode_attention_op.register_fake
def _(q, k, v, mask, scale):
    b, h, _, d = q.shape
    return q.new_empty((b, 1, h, d))


def _decode_mask(mask, q, k):
    """The [B, L] boolean view of sdpa's [B, 1, 1, L] mask (None: every key), or False where it is another kind."""
    if mask is None:
        return None
    b, length = q.shape[0], k.shape[2]
    if mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[1:3] != (1, 1) or mask.shape[-1] != length \
            or mask.shape[0] not in (1, b):
        return False
    return mask[:, 0, 0, :].expand(b, length)


def decode_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                             **kwargs):
    """transformers' attention-function signature (query [B, H, T, D], key / value [B, Hkv, L, D]); returns
    ([B, T, H, D], None) as sdpa does."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    mask = _decode_mask(attention_mask, query, key) if query.shape[2] == 1 else False
    plain = (dropout == 0.0 and kwargs.get("softcap") is None and kwargs.get("s_aux") is None
             and kwargs.get("sinks") is None and query.shape[1] % key.shape[1] == 0
             and not (torch.is_grad_enabled() and query.requires_grad))     # no backward: inference only
    if mask is False or not plain or not available(query.device):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    return torch.ops.sysq.decode_attention(query, key, value, mask, scale), None


def register() -> None:
    """Register `sysq_decode` with transformers (attention function, and sdpa's mask function); idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
    AttentionInterface.register(NAME, decode_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def enable(model) -> str:
    """Run `model`'s attention through `sysq_decode` (through its family adapter); returns the implementation it
    had, for `disable`."""
    register()
    return get_adapter(model).set_attention(NAME)


def disable(model, previous: str = "sdpa") -> None:
    get_adapter(model).set_attention(previous)


def _shared_length_layer():
    from transformers.cache_utils import StaticLayer

    class SharedLengthLayer(StaticLayer):
        """A StaticLayer whose length counter is shared with the cache's other full-attention layers; only the
        one that `advances` (the last) moves it, so the others write at the same positions."""

        def __init__(self, max_cache_len: int, length: torch.Tensor, advances: bool):
            super().__init__(max_cache_len)
            self.cumulative_length, self.advances = length, advances

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            kv_length = key_states.shape[-2]
            position = torch.arange(kv_length, device=self.device) + self.cumulative_length
            if self.advances:
                self.cumulative_length.add_(kv_length)
            self.keys.index_copy_(2, position, key_states)
            self.values.index_copy_(2, position, value_states)
            return self.keys, self.values

        def crop(self, tokens_to_remove: int) -> None:
            if self.advances:
                super().crop(tokens_to_remove)
    return SharedLengthLayer


def static_cache(model, max_len: int):
    """transformers' StaticCache for `model` (batch from the first update), its full-attention layers sharing one
    length counter on the model's device (sliding-window layers keep their own)."""
    from transformers import StaticCache
    from transformers.cache_utils import StaticLayer
    cache = StaticCache(config=model.config, max_cache_len=max_len)
    full = [i for i, layer in enumerate(cache.layers) if type(layer) is StaticLayer]
    if full:
        device = next(model.parameters()).device
        length = torch.zeros((), dtype=torch.long, device=device)
        layer_cls = _shared_length_layer()
        for i in full:
            cache.layers[i] = layer_cls(max_len, length, advances=i == full[-1])
    return cache
