"""Weight-only GEMV for decode (few rows): Triton kernels that stream int4 / int8 weights at bandwidth.

At batch 1 a decode step is a chain of matrix-vector products, bound by how fast the weights stream from
memory. The vendor kernels sysq uses for prefill do not stream them fast on Hopper (tinygemm's m16n8k16 int4
kernel: ~1.5 TB/s on an H200; inductor's fused int8 dequantize-matmul: ~1.4 TB/s). These kernels give each
program a block of output rows (and, where those are few, a slice of K: split-K), so that thousands of
programs keep the memory system busy, and dequantize in registers with float bit tricks instead of
int->float conversions (which run at 1/8 of the FMA rate and would cap the kernel below bandwidth).

  int4  qweight uint8 [N, K/2], two codes u in [0, 15] per byte, even k in the high nibble (the layout
        torch._convert_weight_to_int4pack takes, so prefill repacks it for tinygemm on the fly); scales_zeros
        [K/G, N, 2] (tinygemm's): w = (u - 8) * scale + zero per group of G along K.
  int8  qweight int8 [N, K]; the per-channel scale is applied by the caller (fused by inductor).

Both are torch.library custom ops (`sysq::int4_gemv`, `sysq::int8_gemv`) with fake implementations, so
torch.compile keeps them in its graph and CUDA graphs capture them. They return float32 partial sums
[split_k, M, N]; the caller's `.sum(0)` (and scale, cast) fuses into the next kernel under torch.compile.
On the CPU they run only in Triton's interpreter (TRITON_INTERPRET=1), for tests.

`sysq::int4_mma_gemv` is CUDA C++ (csrc/int4_mma.cu, built on first use): the codes stored as mma.m16n8k16's A
fragments (pack_int4_mma), 1.4-1.7x tinygemm at the 8B decode shapes on an H200, where it is the int4 default.
"""
from __future__ import annotations

import functools
import os

import torch

MAX_ROWS = 16          # decode: rows at or below this take the GEMV; more rows are a GEMM (prefill)
TARGET_PROGRAMS = 256  # ~2 programs per SM on an H200 (132 SMs): split K until the grid has about this many


@functools.lru_cache(maxsize=None)
def has_triton() -> bool:
    try:
        import triton  # noqa: F401
        return True
    except Exception:   # a broken install is the same as none here
        return False


def triton_runs_on(device) -> bool:
    """Triton kernels run on `device`: CUDA with Triton, or the CPU under TRITON_INTERPRET=1 (Triton's interpreter:
    slow, for tests)."""
    dev = torch.device(device)
    return has_triton() and (dev.type == "cuda" or (dev.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"))


# The int4 GEMVs: "fma" (_int4_fma_kernel: one LOP3 and one FMA per code, the group's zero applied outside the
# code loop) and "nibble" (_int4_kernel, the first one). A tuned config names its kernel ("KERNEL"; a config
# without one is the nibble kernel's, as older sweeps wrote them); "tinygemm" there keeps the modules of that
# shape on torch._weight_int4pack_mm. SYSQ_INT4_GEMV=fma|nibble picks the kernel where no config names one.
# "tc" (_int4_tc_kernel: the multiply on tensor cores) takes its own layout of the codes (pack_int4_tc, int16
# words); the modules hold that layout where it is chosen and the group is a multiple of TC_BLOCK (module_kernel).
# "mma" (csrc/int4_mma.cu, CUDA C++ built on first use: the A fragments of mma.m16n8k16 stored in load order,
# pack_int4_mma's int32 words) runs on CUDA only, <= 8 rows a launch, groups of 64 / 128 / 256.
INT4_KERNELS = ("fma", "nibble")      # the byte layout's kernels
INT4_CHOICES = INT4_KERNELS + ("tc", "mma")
TC_BLOCK = 64          # codes per block of pack_int4_tc's layout (16 int16 words, 4 nibble planes of 16)
MMA_GROUPS = (64, 128, 256)


def _env_int4() -> str | None:
    name = os.environ.get("SYSQ_INT4_GEMV")
    if name is not None and name not in INT4_CHOICES + ("tinygemm",):
        from ..errors import SysqError
        raise SysqError(f"SYSQ_INT4_GEMV={name!r}: not an int4 GEMV; use one of "
                        f"{', '.join(INT4_CHOICES + ('tinygemm',))}")
    return name


def int4_kernel(k: int, n: int, config: dict | None = None) -> str:
    """The int4 GEMV kernel a (K, N) product at one row runs: SYSQ_INT4_GEMV where set, else its config's, else
    fma."""
    name = _env_int4()
    if name is not None and config is None:
        return name
    cfg = config if config is not None else tuned("int4", 1, k, n)
    if cfg:
        return cfg.get("KERNEL", "nibble")
    return "fma"


def module_kernel(k: int, n: int, group_size: int) -> str:
    """The int4 GEMV a module of shape (K -> N) runs on: int4_kernel's choice, except that the tensor-core kernels
    take only groups they can read (tc: a multiple of TC_BLOCK dividing K, a dot never spans two groups; mma:
    MMA_GROUPS dividing K, N a multiple of 16, and a CUDA build); other shapes stay on the byte layout and the fma
    kernel. "tc" / "mma": the module holds pack_int4_tc's / pack_int4_mma's layout."""
    name = int4_kernel(k, n)
    if name == "tc" and (group_size % TC_BLOCK or k % group_size):
        return "fma"
    if name == "mma":
        from . import _gemv_cuda
        if group_size not in MMA_GROUPS or k % group_size or n % 16 or not _gemv_cuda.builds():
            return "fma"
    return name


def int4_gemv_for(device, k: int, n: int) -> bool:
    """Whether an int4 module of shape (K -> N) decodes on sysq's GEMV rather than tinygemm: on CUDA
    SYSQ_INT4_GEMV decides where set, else the sweep's table where it names the shape (a config: yes; "tinygemm":
    no); else available()."""
    dev = torch.device(device)
    cfg = tuned("int4", 1, k, n)
    if dev.type == "cuda" and os.environ.get("SYSQ_GEMV", "1") != "0":
        name = _env_int4() or (int4_kernel(k, n, cfg) if cfg else None)
        if name == "mma":           # the CUDA kernel, where it builds (else tinygemm, not a slower Triton kernel)
            from . import _gemv_cuda
            return _gemv_cuda.builds()
        if name is not None and has_triton():
            return name != "tinygemm"
    return available(dev, "int4")


# Which GEMV the real modules take by default on CUDA. Measured on an H200 (scripts/bench_gemv.py, 8B shapes, M=1):
# the int8 GEMV streams 2.4-3.9 TB/s (inductor's fused dequantize-matmul 2.3-3.3); the int4 GEMV only 0.5-1.6 TB/s,
# below tinygemm's 0.5-2.1 (its unpacking is bound by integer throughput), so int4 keeps tinygemm unless
# SYSQ_GEMV=int4 (or "all") asks for it.
DEFAULT_KINDS = ("int8",)


def available(device, kind: str = "int8") -> bool:
    """Whether the `kind` ("int8" | "int4") GEMV runs for modules on `device`: CUDA with Triton, or the CPU under
    TRITON_INTERPRET=1 (Triton's interpreter: slow, for tests). SYSQ_GEMV=0 turns them off, SYSQ_GEMV=int4 / all
    turns the int4 one on (DEFAULT_KINDS otherwise; under the interpreter both run)."""
    dev = torch.device(device)
    flag = os.environ.get("SYSQ_GEMV", "1")
    if flag == "0" or not has_triton():
        return False
    if dev.type == "cpu":
        return os.environ.get("TRITON_INTERPRET") == "1"
    return dev.type == "cuda" and (kind in DEFAULT_KINDS or flag in (kind, "all"))


# Launch configs chosen per GPU and decode shape (batch 1) by scripts/sweep_gemv.py / scripts/bench_decode_kernels.py
# on that GPU: name -> kind -> (K, N) -> {SPLIT_K, BLOCK_N, BLOCK_K | GPC, num_warps, num_stages} ("KERNEL":
# "tinygemm" keeps an int4 shape on torch's kernel). A shape or GPU not listed takes the autotuned kernel and the
# split_k heuristic. SYSQ_GEMV_CONFIGS=FILE (a sweep's gemv_configs.json; read at import) replaces the table on every
# GPU, so a sweep's choice can be measured in a model before it is written here.
_TINYGEMM = {"KERNEL": "tinygemm"}


def _MMA(config: int) -> dict:
    return {"KERNEL": "mma", "CONFIG": config}

TUNED: dict[str, dict[str, dict[tuple[int, int], dict]]] = {
    # call A11 (eleventh session): Llama-3-8B decode shapes, q/k/v and gate/up fused; int4 from call G7's sweep
    "NVIDIA H200": {
        "int8": {(14336, 4096): dict(SPLIT_K=1, BLOCK_N=4, BLOCK_K=2048, num_warps=4, num_stages=4),
                 (4096, 6144): dict(SPLIT_K=1, BLOCK_N=16, BLOCK_K=1024, num_warps=8, num_stages=1),
                 (4096, 4096): dict(SPLIT_K=1, BLOCK_N=4, BLOCK_K=2048, num_warps=4, num_stages=4),
                 (4096, 28672): dict(SPLIT_K=1, BLOCK_N=16, BLOCK_K=256, num_warps=2, num_stages=1),
                 (4096, 128256): dict(SPLIT_K=1, BLOCK_N=16, BLOCK_K=512, num_warps=4, num_stages=3)},
        # call A13 (thirteenth session): the CUDA mma kernel at its fastest config per shape, 1.3-1.7x tinygemm
        # (bench_gemv.py --mma-sweep; docs/GEMV.md)
        "int4": {(4096, 6144): _MMA(5), (4096, 4096): _MMA(5), (4096, 28672): _MMA(5), (14336, 4096): _MMA(5),
                 (4096, 1024): _MMA(5), (4096, 14336): _MMA(5), (4096, 128256): _MMA(0)},
    },
}


def load_table(path: str | None) -> dict | None:
    """A sweep's gemv_configs.json ({kind: {"KxN": config}}) as one GPU's entry of TUNED; None for no path (TUNED,
    by the GPU's name)."""
    if not path:
        return None
    import json
    try:
        raw = json.loads(open(path).read())
    except (OSError, ValueError) as e:
        from ..errors import SysqError
        raise SysqError(f"SYSQ_GEMV_CONFIGS={path}: cannot read it ({e}); give the gemv_configs.json that "
                        "scripts/sweep_gemv.py wrote, or unset it") from e
    return {kind: {tuple(int(v) for v in key.split("x")): cfg for key, cfg in shapes.items()}
            for kind, shapes in raw.items()}


_ACTIVE = load_table(os.environ.get("SYSQ_GEMV_CONFIGS"))   # read once, outside any compiled region


def use_table(path: str | None) -> None:
    """Launch configs from a sweep's file from now on (None: back to TUNED)."""
    global _ACTIVE
    _ACTIVE = load_table(path)


@torch.compiler.assume_constant_result     # asked while tracing a forward: decided once, outside the graph
def gpu_name() -> str:
    """The current CUDA device's name ("" without CUDA): TUNED's key."""
    return _device_name(torch.cuda.current_device()) if torch.cuda.is_available() else ""


@functools.lru_cache(maxsize=None)
def _device_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


def tuned(kind: str, m: int, k: int, n: int) -> dict | None:
    """The chosen launch config of a (kind, K, N) GEMV at one row, or None (autotune)."""
    if m != 1:
        return None
    table = _ACTIVE if _ACTIVE is not None else TUNED.get(gpu_name(), {})
    return table.get(kind, {}).get((k, n))


def _split(kind: str, m: int, k: int, n: int, chunks: int, block_n: int = 16) -> int:
    cfg = tuned(kind, m, k, n)
    return int(cfg["SPLIT_K"]) if cfg and "SPLIT_K" in cfg else split_k(m, n, chunks, block_n)


def split_k(m: int, n: int, chunks: int, block_n: int = 16) -> int:
    """Slices of K per output block: a power of two, enough for about TARGET_PROGRAMS programs, at most 8 (the
    caller's sum over slices stays a pointwise kernel inductor can fuse) and at most the number of K chunks."""
    s = 1
    while s < 8 and 2 * s <= chunks and m * -(-n // block_n) * s * 2 <= TARGET_PROGRAMS:
        s *= 2
    return s


def _launch(which: str, x, qweight, aux, group_size: int, s: int, config: dict | None = None, gated: bool = False):
    """int4: aux = scales_zeros; int8: aux = None (fp32 partial sums [s, M, N]) or the per-channel fp32 scale
    (s = 1: y * scale in x's dtype [M, N], the epilogue in the kernel)."""
    from . import _gemv_triton as T
    m, k = x.shape
    k = k // 2 if gated else k      # gated: x is [gate | up], the product's K is half its width
    n = qweight.shape[0]
    scaled = which == "int8" and aux is not None
    out = torch.empty((m, n) if scaled else (s, m, n), dtype=x.dtype if scaled else torch.float32, device=x.device)
    kern = T.kernels()
    if config is None:
        chosen = tuned(which, m, k, n)
        config = None if chosen is None else {k_: v for k_, v in chosen.items() if k_ != "SPLIT_K"}
    if which == "int4":
        name4 = int4_kernel(k, n, config)
        if qweight.dtype == torch.int16:      # pack_int4_tc's layout: only the tensor-core kernel reads it
            which, config = "int4tc", config if name4 == "tc" else None
        elif name4 in ("fma", "tc"):          # bytes: the tc kernel cannot read them (a group it cannot take)
            which, config = "int4f", config if name4 == "fma" else None
    config = None if config is None else {k_: v for k_, v in config.items() if k_ != "KERNEL"} or None
    auto = x.device.type == "cuda" and config is None
    cfg = {} if auto else dict(config or T.INTERPRET_CONFIG[which])
    fn = kern[which][0 if auto else 1]
    warps = {k_: cfg.pop(k_) for k_ in ("num_warps", "num_stages") if k_ in cfg}
    if x.device.type != "cuda":
        warps = {}

    def grid(meta):      # the tensor-core kernel takes every row of x in its tile
        return (1 if which == "int4tc" else m, -(-n // meta["BLOCK_N"]), s)
    if which == "int4tc":
        fn[grid](x, qweight, aux, out, m, n, k, x.stride(0), G=group_size, SPLIT_K=s, **cfg, **warps)
    elif which in ("int4", "int4f"):
        fn[grid](x, qweight.view(torch.int32), aux, out, m, n, k, x.stride(0), G=group_size, SPLIT_K=s, **cfg, **warps)
    else:
        fn[grid](x, qweight.view(torch.int32), out, aux if scaled else out, m, n, k, x.stride(0), SPLIT_K=s,
                 SCALED=scaled, GATED=gated, **cfg, **warps)
    return out


def _check(x, qweight, k_per_byte: int):
    if x.dim() != 2 or x.shape[0] > MAX_ROWS or x.stride(1) != 1:
        raise ValueError(f"GEMV takes a contiguous [M <= {MAX_ROWS}, K] input (got {tuple(x.shape)})")
    if qweight.shape[1] * k_per_byte != x.shape[1] or x.shape[1] % 8:
        raise ValueError(f"GEMV: weight {tuple(qweight.shape)} does not match input {tuple(x.shape)}")


@torch.library.custom_op("sysq::int4_gemv", mutates_args=())
def int4_gemv_partials(x: torch.Tensor, qweight: torch.Tensor, scales_zeros: torch.Tensor, group_size: int,
                       split: int) -> torch.Tensor:
    """float32 [split, M, N]: partial sums over slices of K of x @ dequantized(qweight)^T."""
    _check(x, qweight, 2)
    return _launch("int4", x, qweight, scales_zeros, group_size, split)


@int4_gemv_partials.register_fake
def _(x, qweight, scales_zeros, group_size, split):
    return x.new_empty((split, x.shape[0], qweight.shape[0]), dtype=torch.float32)


@torch.library.custom_op("sysq::int4_tc_gemv", mutates_args=())
def int4_tc_gemv_partials(x: torch.Tensor, qweight: torch.Tensor, scales_zeros: torch.Tensor, group_size: int,
                          split: int) -> torch.Tensor:
    """float32 [split, M, N]: as int4_gemv, the codes in pack_int4_tc's layout (int16 [N, K/4]), the multiply on
    tensor cores (x in bf16 or fp16)."""
    _check(x, qweight, 4)
    if qweight.dtype != torch.int16 or group_size % TC_BLOCK or x.shape[1] % group_size:
        raise ValueError(f"int4_tc_gemv takes pack_int4_tc's int16 words and a group size that is a multiple of "
                         f"{TC_BLOCK} dividing K (got {qweight.dtype}, group {group_size}, K {x.shape[1]})")
    if x.dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"int4_tc_gemv takes bf16 or fp16 x (got {x.dtype})")
    return _launch("int4", x, qweight, scales_zeros, group_size, split)


@int4_tc_gemv_partials.register_fake
def _(x, qweight, scales_zeros, group_size, split):
    return x.new_empty((split, x.shape[0], qweight.shape[0]), dtype=torch.float32)


# The mma kernel's launch configs (csrc/int4_mma.cu CONFIGS: warps per block, 64-k chunks in flight per warp).
MMA_CONFIGS = ((4, 4), (8, 4), (4, 8), (8, 8), (16, 4), (16, 2))


def mma_config(k: int, n: int) -> int:
    """The mma kernel's launch config for a (K -> N) product: the table's ("CONFIG" of an int4 entry whose KERNEL is
    "mma"), else more warps per block where N / 16 blocks are few."""
    cfg = tuned("int4", 1, k, n)
    if cfg and cfg.get("KERNEL") == "mma" and "CONFIG" in cfg:
        return int(cfg["CONFIG"])
    return 5 if n // 16 <= 4096 else 0          # an H200's best: 16 warps x 2 chunks, 4 x 4 for lm_head


@torch.library.custom_op("sysq::int4_mma_gemv", mutates_args=())
def int4_mma_gemv(x: torch.Tensor, qweight: torch.Tensor, scales_zeros: torch.Tensor, group_size: int,
                  config: int) -> torch.Tensor:
    """[M, N] in x's dtype: x [M <= 8, K] (bf16 / fp16) @ dequantized(qweight)^T, the codes in pack_int4_mma's
    layout (int32 [N, K/8]), on tensor cores (csrc/int4_mma.cu); config indexes MMA_CONFIGS."""
    from . import _gemv_cuda
    return _gemv_cuda.extension().int4_mma_gemv(x.contiguous(), qweight, scales_zeros.contiguous(), group_size,
                                                config)


@int4_mma_gemv.register_fake
def _(x, qweight, scales_zeros, group_size, config):
    return x.new_empty((x.shape[0], qweight.shape[0]))


@torch.library.custom_op("sysq::int8_gemv", mutates_args=())
def int8_gemv_partials(x: torch.Tensor, qweight: torch.Tensor, split: int) -> torch.Tensor:
    """float32 [split, M, N]: partial sums over slices of K of x @ qweight^T (codes, unscaled)."""
    _check(x, qweight, 1)
    return _launch("int8", x, qweight, None, 0, split)


@int8_gemv_partials.register_fake
def _(x, qweight, split):
    return x.new_empty((split, x.shape[0], qweight.shape[0]), dtype=torch.float32)


@torch.library.custom_op("sysq::int8_gemv_scaled", mutates_args=())
def int8_gemv_scaled_op(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x.dtype [M, N]: (x @ qweight^T) * scale with no split of K, the scale and cast done in the kernel."""
    _check(x, qweight, 1)
    if scale.dtype != torch.float32 or scale.shape != (qweight.shape[0],) or not scale.is_contiguous():
        raise ValueError(f"int8_gemv_scaled takes a contiguous float32 scale [{qweight.shape[0]}]")
    return _launch("int8", x, qweight, scale, 0, 1)


@int8_gemv_scaled_op.register_fake
def _(x, qweight, scale):
    return x.new_empty((x.shape[0], qweight.shape[0]))


@torch.library.custom_op("sysq::int8_gemv_gated_scaled", mutates_args=())
def int8_gemv_gated_scaled_op(gate_up: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """gate_up.dtype [M, N]: (silu(gate) * up) @ qweight^T * scale, gate_up = [gate | up] rows (2K wide), no
    split of K: a gated MLP's down projection with the activation in the kernel's prologue."""
    if gate_up.dim() != 2 or gate_up.shape[1] != 2 * qweight.shape[1]:
        raise ValueError(f"gated GEMV: [gate | up] {tuple(gate_up.shape)} does not match weight {tuple(qweight.shape)}")
    _check(gate_up[:, :qweight.shape[1]], qweight, 1)
    if scale.dtype != torch.float32 or scale.shape != (qweight.shape[0],) or not scale.is_contiguous():
        raise ValueError(f"int8_gemv_gated_scaled takes a contiguous float32 scale [{qweight.shape[0]}]")
    return _launch("int8", gate_up, qweight, scale, 0, 1, gated=True)


@int8_gemv_gated_scaled_op.register_fake
def _(gate_up, qweight, scale):
    return gate_up.new_empty((gate_up.shape[0], qweight.shape[0]))


# The SiLU in the down projection's prologue saves the pointwise kernel before it, but every program then reads
# gate and up whole and recomputes the activation: on one H200 (scripts/bench_decode_kernels.py, call A11) the gated
# 14336 -> 4096 GEMV took 26.6 us against 24.3 us for the pointwise kernel (1.3 us) and the plain GEMV together. Off
# unless SYSQ_GEMV_GATED=1.
GATED_PROLOGUE = os.environ.get("SYSQ_GEMV_GATED", "0") == "1"


def int8_gemv_gated(gate_up: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor | None:
    """silu(gate) * up, then @ qweight^T * scale, in one kernel; None where the prologue is off (GATED_PROLOGUE) or K
    would be split (the caller then computes the product and the plain GEMV)."""
    m, k = gate_up.shape[0], qweight.shape[1]
    if not GATED_PROLOGUE or _split("int8", m, k, qweight.shape[0], k // 512) != 1:
        return None
    return torch.ops.sysq.int8_gemv_gated_scaled(gate_up.contiguous(), qweight, scale)


def int4_gemv(x: torch.Tensor, qweight: torch.Tensor, scales_zeros: torch.Tensor, group_size: int) -> torch.Tensor:
    """x [M, K] @ W^T in float32 [M, N] (in x's dtype from the mma kernel), W the int4 weight of the layout above."""
    k, n = x.shape[1], qweight.shape[0]
    if qweight.dtype == torch.int32:     # pack_int4_mma's layout: the CUDA kernel, 8 rows a launch
        c = mma_config(k, n)
        return torch.cat([torch.ops.sysq.int4_mma_gemv(x[i:i + 8], qweight, scales_zeros, group_size, c)
                          for i in range(0, x.shape[0], 8)]) if x.shape[0] > 8 else \
            torch.ops.sysq.int4_mma_gemv(x, qweight, scales_zeros, group_size, c)
    if qweight.dtype == torch.int16:     # pack_int4_tc's layout: the tensor-core kernel (all rows in one program)
        s = _split("int4", 1, k, n, k // (2 * group_size), 128)
        return torch.ops.sysq.int4_tc_gemv(x, qweight, scales_zeros, group_size, s).sum(0)
    fma = int4_kernel(k, n) in ("fma", "tc")     # its tiles hold about 16 groups of K, 8 rows
    s = _split("int4", x.shape[0], k, n, k // ((16 if fma else 2) * group_size), 8 if fma else 16)
    return torch.ops.sysq.int4_gemv(x, qweight, scales_zeros, group_size, s).sum(0)


def int8_gemv(x: torch.Tensor, qweight: torch.Tensor) -> torch.Tensor:
    """x [M, K] @ qweight^T in float32 [M, N] (int8 codes; the caller multiplies by the scale)."""
    s = _split("int8", x.shape[0], x.shape[1], qweight.shape[0], x.shape[1] // 512)
    return torch.ops.sysq.int8_gemv(x, qweight, s).sum(0)


def int8_gemv_scaled(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(x [M, K] @ qweight^T) * scale [N] (float32) in x's dtype. Where N alone fills the GPU (no split of K:
    every projection of an 8B model once k/v are fused) the kernel applies the scale and casts, so no kernel
    follows it; else the partial sums, their sum, scale and cast (a pointwise kernel inductor may fuse)."""
    s = _split("int8", x.shape[0], x.shape[1], qweight.shape[0], x.shape[1] // 512)
    if s == 1:
        return torch.ops.sysq.int8_gemv_scaled(x, qweight, scale)
    return (torch.ops.sysq.int8_gemv(x, qweight, s).sum(0) * scale).to(x.dtype)


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Signed int4 codes [N, K] in [-8, 7] -> uint8 [N, K/2] of u = q + 8, even k in the high nibble."""
    u = codes.to(torch.int32) + 8
    return (u[:, ::2] << 4 | u[:, 1::2]).to(torch.uint8).contiguous()


def unpack_nibbles(qweight: torch.Tensor) -> torch.Tensor:
    """uint8 [N, K/2] -> u int32 [N, K] in [0, 15] (inverse of pack_nibbles, before the -8)."""
    b = qweight.to(torch.int32)
    return torch.stack([b >> 4, b & 15], dim=-1).reshape(b.shape[0], -1)


def pack_int4_tc(codes: torch.Tensor) -> torch.Tensor:
    """Signed int4 codes [N, K] in [-8, 7] (K a multiple of TC_BLOCK) -> int16 [N, K/4] of u = q + 8, the tensor-core
    GEMV's layout: in each block of 64 codes (16 words), bits 4t..4t+3 of word i hold k = 16 t + i. Nibble plane t
    of a tile of words is then the weight at 16 contiguous k per block, in the words' own shape."""
    n, k = codes.shape
    if k % TC_BLOCK:
        raise ValueError(f"pack_int4_tc: K = {k} is not a multiple of {TC_BLOCK}")
    u = (codes.to(torch.int32) + 8).reshape(n, k // TC_BLOCK, 4, 16)
    w = u[:, :, 0] | u[:, :, 1] << 4 | u[:, :, 2] << 8 | u[:, :, 3] << 12
    return torch.where(w >= 1 << 15, w - (1 << 16), w).reshape(n, k // 4).to(torch.int16).contiguous()


def unpack_int4_tc(qweight: torch.Tensor) -> torch.Tensor:
    """int16 [N, K/4] -> u int32 [N, K] in [0, 15] (inverse of pack_int4_tc, before the -8)."""
    w = qweight.to(torch.int32).reshape(qweight.shape[0], -1, 1, 16)
    return ((w >> (4 * torch.arange(4, device=w.device).view(1, 1, 4, 1))) & 15).reshape(qweight.shape[0], -1)


# pack_int4_mma: tile (16 rows, 64 k) -> 32 lanes x 4 words. Lane (g, c) = (lane // 4, lane % 4), word s (the
# k16 step) holds its A fragment of mma.m16n8k16: pair p at bits 4p (first) and 16 + 4p (second), p = 2e' + h for
# rows g + 8h and chunk-local k = 16c + 4s + 2e' + {0, 1} (k permuted within the chunk so that lane c's x is the
# contiguous k = 16c .. 16c + 15; the kernel reads B in the same order).
_MMA_SHIFT = torch.tensor([[0, 16, 8, 24], [4, 20, 12, 28]])    # [h, e] -> bit offset, e = k % 4


def pack_int4_mma(codes: torch.Tensor) -> torch.Tensor:
    """Signed int4 codes [N, K] in [-8, 7] (N a multiple of 16, K of 64) -> int32 [N, K/8] of u = q + 8 in the mma
    kernel's order (the rows of the result are not the weight's rows: the buffer is tiles of 16 x 64)."""
    n, k = codes.shape
    if n % 16 or k % 64:
        raise ValueError(f"pack_int4_mma: N = {n} must be a multiple of 16 and K = {k} of 64")
    u = (codes.to(torch.int64) + 8).reshape(n // 16, 2, 8, k // 64, 4, 4, 4)      # t, h, g, q, c, s, e
    w = (u << _MMA_SHIFT.to(u.device).view(1, 2, 1, 1, 1, 1, 4)).sum(dim=(1, 6))  # t, g, q, c, s (disjoint bits)
    w = w.permute(0, 2, 1, 3, 4).reshape(n, k // 8)                                 # t, q, g, c, s
    return torch.where(w >= 1 << 31, w - (1 << 32), w).to(torch.int32).contiguous()


def unpack_int4_mma(qweight: torch.Tensor) -> torch.Tensor:
    """int32 [N, K/8] -> u int32 [N, K] in [0, 15] (inverse of pack_int4_mma, before the -8)."""
    n, k = qweight.shape[0], qweight.shape[1] * 8
    w = qweight.to(torch.int64).reshape(n // 16, k // 64, 8, 4, 4).permute(0, 2, 1, 3, 4)   # t, g, q, c, s
    u = (w.reshape(n // 16, 1, 8, k // 64, 4, 4, 1) >> _MMA_SHIFT.to(w.device).view(1, 2, 1, 1, 1, 1, 4)) & 15
    return u.reshape(n, k).to(torch.int32)


def int4_codes(qweight: torch.Tensor) -> torch.Tensor:
    """u int32 [N, K] in [0, 15] of any layout: pack_nibbles' bytes, pack_int4_tc's int16 or pack_int4_mma's
    int32 words."""
    if qweight.dtype == torch.int32:
        return unpack_int4_mma(qweight)
    return unpack_int4_tc(qweight) if qweight.dtype == torch.int16 else unpack_nibbles(qweight)


def dequantize_int4(qweight: torch.Tensor, scales_zeros: torch.Tensor, group_size: int) -> torch.Tensor:
    """The float32 weight [N, K] the int4 kernel multiplies by: (u - 8) * scale + zero per group (either layout)."""
    u = int4_codes(qweight).float()
    n, k = u.shape
    s = scales_zeros[..., 0].t().float().repeat_interleave(group_size, dim=1)
    z = scales_zeros[..., 1].t().float().repeat_interleave(group_size, dim=1)
    return (u - 8) * s + z
