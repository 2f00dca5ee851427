"""Real kernels: quantized linears that hold only what a deployment holds and run vendor matmuls.

  Int8Linear    W8A8 INT8  torch._int_mm (int8 x int8 -> int32), rescaled by activation x weight scales
  Fp8Linear     W8A8 FP8   torch._scaled_mm (e4m3 x e4m3, fp32 accumulation); on CUDA in bf16 the
                           per-token and per-channel scales go into the matmul itself (rowwise scaling)
  Int8WOLinear  W8A16      torch._weight_int8pack_mm on the CPU; on CUDA the dequantize-matmul expression
                           F.linear(x, q.to(x.dtype)) * s, which torch.compile fuses into one pass over the
                           int8 weight (ATen's CUDA int8pack kernel is a plain loop per output)
  Int4WOLinear  W4A16      the int4 pack kernels in tinygemm's layout (torch._weight_int4pack_mm on CUDA,
                           torch._weight_int4pack_mm_for_cpu): w = (u - 8) * scale + zero per group, with
                           u in [0, 15] and a float zero, so sysq's codes map exactly (tinygemm_pack)
On CUDA with Triton, the weight-only modules run decode (<= gemv.MAX_ROWS rows) on sysq's Triton GEMV
kernels (sysq.quant.gemv); Int4WOLinear then holds the codes as bytes (gemv.pack_nibbles) and repacks them
for tinygemm on the fly when more rows come (prefill: a pass over 4-bit weights, small beside the GEMM).

Each is built from a quantized QuantLinear (its simulated twin), on the device it will run on, and keeps
the twin's codes and scales: integer and FP8 products are exact, so a real module's output differs from
its twin's only by float rounding (accumulation order, the rescale, and on the CPU weight-only kernels the
bf16 activations they take). Activation scales are computed by the same free functions (sysq.quant.math)
as the simulation. Tokens the recipe preserves (preserve_threshold / preserve_positions) take the float
path with the dequantized weight, as in the twin. No module keeps a float copy of its weight.

A kernel that does not run on the current device (torch._scaled_mm on a GPU older than compute capability
8.9, or on a torch build without it) is found by a one-off probe when the module is built and refused with
a SysqError that names the fix, instead of a crash inside a forward pass.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SysqError
from . import gemv
from .linear import QuantLinear
from .math import qparams, quantize, quantize_fp8
from .observers import token_keep_mask
from .recipes import INT4_GROUPS

# The CPU weight-only kernels are vectorised for bf16 activations only (float32 takes a scalar loop,
# 5-20x slower than MKL fp32 on this machine's AVX-512 CPU): a16 runs as bf16 there.
CPU_WO_DTYPE = torch.bfloat16


# ---- probes: does a kernel run on this device? ---------------------------------------------------------

def _probe_scaled_mm(dev):
    a = torch.ones(16, 16, device=dev).to(torch.float8_e4m3fn)
    one = torch.ones((), device=dev)
    torch._scaled_mm(a, a.t(), scale_a=one, scale_b=one, out_dtype=torch.float32)


def _probe_int_mm(dev):
    a = torch.ones(32, 32, dtype=torch.int8, device=dev)
    torch._int_mm(a, a.t())


def _probe_int8pack(dev):
    torch._weight_int8pack_mm(torch.ones(1, 32, dtype=CPU_WO_DTYPE, device=dev),
                              torch.ones(32, 32, dtype=torch.int8, device=dev),
                              torch.ones(32, dtype=CPU_WO_DTYPE, device=dev))


def _probe_scaled_mm_rowwise(dev):
    """Fp8Linear's CUDA bf16 call: per-row / per-column fp32 scales inside the matmul, fast accumulation."""
    a = torch.ones(32, 32, device=dev).to(torch.float8_e4m3fn)
    y = torch._scaled_mm(a, a.t(), scale_a=torch.full((32, 1), 2.0, device=dev),
                         scale_b=torch.full((1, 32), 0.5, device=dev), out_dtype=torch.bfloat16, use_fast_accum=True)
    if not torch.equal(y.float(), torch.full_like(y.float(), 32.0)):
        raise RuntimeError("rowwise scales were not applied as [M, 1] x [1, N]")


def _probe_int4pack(dev):
    """Packs known codes and reads them back through the kernel: a torch whose int4 layout differs from the one
    tinygemm_pack writes (the nibble order changed across versions) is refused here, not run with wrong weights."""
    g = torch.Generator().manual_seed(0)
    u = torch.randint(0, 16, (32, 64), generator=g, dtype=torch.int32).to(dev)
    sz = torch.stack([torch.ones(2, 32), torch.zeros(2, 32)], dim=-1).to(dev, torch.bfloat16)
    w = _int4_mm(torch.eye(64, dtype=torch.bfloat16, device=dev), _pack_for(dev, u, 2), 32, sz).t()
    if not torch.equal(w.float(), (u - 8).float()):
        raise RuntimeError(f"the int4 pack layout of torch {torch.__version__} on {dev} is not the one sysq writes "
                           "(codes read back differ)")


PROBES = {"torch._scaled_mm": _probe_scaled_mm, "torch._scaled_mm rowwise": _probe_scaled_mm_rowwise,
          "torch._int_mm": _probe_int_mm,
          "torch._weight_int8pack_mm": _probe_int8pack, "int4 pack (tinygemm)": _probe_int4pack}
FIXES = {
    "torch._scaled_mm": "FP8 matmuls need a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper) or a "
                        "torch whose CPU build has torch._scaled_mm (2.6+); run the simulated recipe instead "
                        "(backend 'fake', e.g. 'w8a8-fp8', which is exact on any device)",
    "torch._int_mm": "use a CUDA GPU or a CPU torch build with torch._int_mm, or the simulated recipe "
                     "(backend 'fake')",
    "torch._weight_int8pack_mm": "use a torch build with the int8 weight-only kernel, or the simulated 'w8a16'",
    "int4 pack (tinygemm)": "the int4 kernels run on CUDA (torch._weight_int4pack_mm) and on x86/ARM CPUs "
                            "(torch._weight_int4pack_mm_for_cpu); use the simulated 'w4a16' elsewhere",
}


@functools.lru_cache(maxsize=None)
def _probe(kernel: str, device: str) -> str | None:
    try:
        PROBES[kernel](torch.device(device))
        return None
    except Exception as e:   # any failure means: this kernel does not run here
        return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"


def require(kernel: str, device) -> None:
    """Raise a SysqError naming the fix when `kernel` does not run on `device` (probed once per device)."""
    dev = torch.device(device)
    if dev.type == "meta":
        return
    why = _probe(kernel, str(dev))
    if why is not None:
        raise SysqError(f"{kernel} does not run on {dev} ({why}); {FIXES[kernel]}")


# ---- the int4 layout (tinygemm) -----------------------------------------------------------------------

def _pack_for(dev, u: torch.Tensor, inner_k_tiles: int) -> torch.Tensor:
    if torch.device(dev).type == "cuda":   # CUDA takes two codes per byte, high nibble first
        return torch._convert_weight_to_int4pack((u[:, ::2] << 4 | u[:, 1::2]).to(torch.uint8), inner_k_tiles)
    return torch._convert_weight_to_int4pack_for_cpu(u.to(torch.int32), inner_k_tiles)


def _int4_mm(x, packed, group_size, scales_zeros):
    if x.is_cuda:
        return torch._weight_int4pack_mm(x, packed, group_size, scales_zeros)
    return torch._weight_int4pack_mm_for_cpu(x, packed, group_size, scales_zeros)


def inner_k_tiles(in_features: int) -> int:
    for t in (8, 4, 2):
        if in_features % (16 * t) == 0:
            return t
    raise SysqError(f"the int4 pack kernels need in_features divisible by 32 (got {in_features}); "
                    "keep this linear in float (recipe skip) or use the simulated backend")


def tinygemm_pack(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, group_size: int,
                  dtype=torch.bfloat16, float_zero: bool = False):
    """sysq INT4 codes -> (packed weight, scales_and_zeros [groups, out, 2]) for the int4 pack kernels.

    sysq's codes q are signed, in [-8, 7], per group: w = (q - z) * s with an integer zero point z (0 when
    symmetric), or w = q * s + m with a float offset m (float_zero: GGUF Q4_1 / HQQ style). The kernels compute
    w = (u - 8) * s + zf with u in [0, 15]: u = q + 8, and zf = -z * s, or zf = m. Packed on codes' device, in
    that device's layout."""
    if codes.shape[0] % 16:
        raise SysqError(f"the int4 pack kernels need out_features divisible by 16 (got {codes.shape[0]})")
    if group_size not in INT4_GROUPS:
        raise SysqError(f"the int4 pack kernels take group sizes {INT4_GROUPS} (this linear has {group_size})")
    u = codes.to(torch.int32) + 8
    if zero is None:
        zf = torch.zeros_like(scale, dtype=torch.float32)
    else:
        zf = zero.float() if float_zero else -(zero.float() * scale.float())
    sz = torch.stack([scale.float().t(), zf.t()], dim=-1).to(dtype).contiguous()
    return _pack_for(codes.device, u, inner_k_tiles(codes.shape[1])), sz


def tinygemm_dequantize(packed: torch.Tensor, scales_zeros: torch.Tensor, group_size: int,
                        in_features: int) -> torch.Tensor:
    """The float weight [out, in] the kernel multiplies by: the kernel applied to the identity matrix."""
    eye = torch.eye(in_features, dtype=scales_zeros.dtype, device=packed.device)
    return _int4_mm(eye, packed, group_size, scales_zeros).t().float()


def tinygemm_unpack(packed: torch.Tensor, scales_zeros: torch.Tensor, group_size: int, in_features: int):
    """(codes int8 [out, in] in [-8, 7], scale [out, groups], zf [out, groups]): inverse of tinygemm_pack."""
    w = tinygemm_dequantize(packed, scales_zeros, group_size, in_features)
    s, zf = scales_zeros[..., 0].t().float(), scales_zeros[..., 1].t().float()
    g = w.reshape(w.shape[0], -1, group_size)
    u = torch.round((g - zf.unsqueeze(-1)) / s.unsqueeze(-1)) + 8
    return (u.clamp(0, 15) - 8).to(torch.int8).reshape(w.shape), s, zf


# ---- modules ------------------------------------------------------------------------------------------

def _pad_to(x: torch.Tensor, dim: int, multiple: int, minimum: int = 0) -> torch.Tensor:
    n = x.shape[dim]
    target = max(minimum, -(-n // multiple) * multiple)
    if target == n:
        return x
    pad = [0, 0] * (x.dim() - 1 - dim) + [0, target - n]
    return F.pad(x, pad)


def int_mm(a: torch.Tensor, b_t: torch.Tensor) -> torch.Tensor:
    """a [m, k] int8 @ b_t [k, n] int8 -> int32 [m, n], padding where CUDA's kernel needs it (rows > 16,
    k and n multiples of 8; checked on an H200, torch 2.11)."""
    if a.device.type != "cuda":
        return torch._int_mm(a, b_t)
    m, n = a.shape[0], b_t.shape[1]
    if m > 16 and a.shape[1] % 8 == 0 and n % 8 == 0:
        return torch._int_mm(a, b_t)
    ap = _pad_to(_pad_to(a, 0, 8, minimum=17), 1, 8)
    bp = _pad_to(_pad_to(b_t, 0, 8), 1, 8)
    return torch._int_mm(ap, bp)[:m, :n]


class RealLinear(nn.Module):
    """Shared by the real modules: shapes, bias, the activation rule for preserved tokens, the output."""

    kernel = ""

    def __init__(self, ql: QuantLinear):
        super().__init__()
        if not ql.quantized or ql.weight_spec is None:
            raise SysqError(f"{ql.name}: quantize the weights first (sysq.quantize), then convert")
        if ql.preserve_channels is not None:
            raise SysqError(f"{ql.name}: real kernels do not run preserve_channels; use the simulated backend")
        self.in_features, self.out_features, self.name = ql.in_features, ql.out_features, ql.name
        self.act_spec = ql.act_spec
        self.bias = ql.bias
        a = ql.act_spec
        self.rule = None if a is None or (a.preserve_threshold is None and not a.preserve_positions) else \
            (a.preserve_threshold, tuple(a.preserve_positions))

    def _mm(self, x2: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def dequantized_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def act_scale_for(self, x2: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor | None:
        """The activation scale the twin uses: per token (or per tensor) from x itself when dynamic, with
        preserved tokens left out of the range; the calibrated one when static."""
        a = self.act_spec
        if a is None:
            return None
        if not a.dynamic:
            return self.act_scale
        xs = x2 if keep is None else x2.masked_fill(keep.unsqueeze(-1), 0)
        return qparams(xs, a.bits, a.symmetric, a.granularity, None, a.clip_ratio, type=a.type)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)
        keep = None
        if self.rule is not None:
            keep = token_keep_mask(x, *self.rule)
            keep = None if keep is None else keep.reshape(-1)
        y = self._mm(x2, self.act_scale_for(x2, keep))
        if keep is not None and bool(keep.any()):   # preserved tokens: float matmul with the dequantized weight
            y = y.clone()
            y[keep] = (x2[keep].float() @ self.dequantized_weight().t()).to(y.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def scheme(self) -> str:
        a = self.act_spec
        how = "" if a is None else (", a dynamic per token" if a.dynamic and a.granularity == "token" else
                                    ", a dynamic per tensor" if a.dynamic else ", a static per tensor")
        return f"{self.kernel}{how}"

    def extra_repr(self) -> str:
        return f"{self.name} in={self.in_features}, out={self.out_features}, {self.scheme()}"


def _check(ql: QuantLinear, ok: bool, what: str) -> None:
    if not ok:
        raise SysqError(f"{ql.name}: {what} (this linear: {ql.extra_repr()})")


class Int8Linear(RealLinear):
    """y = (q_x @ q_w^T) * s_x * s_w + b with integer accumulation (torch._int_mm)."""

    kernel = "int8 torch._int_mm"

    def __init__(self, ql: QuantLinear):
        super().__init__(ql)
        w, a = ql.weight_spec, ql.act_spec
        _check(ql, w.type == "int" and w.bits == 8 and w.symmetric and w.granularity == "channel",
               "Int8Linear needs an int8 symmetric per-channel quantized weight")
        _check(ql, a is not None and a.type == "int" and a.bits == 8 and a.symmetric
               and a.granularity in ("token", "tensor"), "Int8Linear needs int8 symmetric per-token or per-tensor "
               "activations")
        require("torch._int_mm", ql.w_scale.device)
        self.register_buffer("qweight", ql.qweight.contiguous())               # [out, in] int8
        self.register_buffer("w_scale", ql.w_scale.reshape(1, -1).float())     # [1, out]
        # calibration leaves a static scale 0-dim on the CPU (it broadcasts in the simulation); the kernel needs it here
        self.register_buffer("act_scale", None if a.dynamic
                             else ql.act_scale.reshape(1, 1).float().to(ql.w_scale.device))

    def _mm(self, x2, s):
        acc = int_mm(quantize(x2.float(), s, 0.0, 8), self.qweight.t())
        return acc.float() * s * self.w_scale

    def dequantized_weight(self):
        return self.qweight.float() * self.w_scale.t()


class Fp8Linear(RealLinear):
    """y = (fp8(x / s_x) @ fp8(W / s_w)^T) * s_x * s_w + b through torch._scaled_mm."""

    kernel = "fp8 e4m3 torch._scaled_mm"
    fast_accum = True     # CUDA bf16 path: Hopper's fast FP8 accumulation, as serving stacks run it

    def __init__(self, ql: QuantLinear):
        super().__init__(ql)
        w, a = ql.weight_spec, ql.act_spec
        _check(ql, w.type == "float" and w.granularity in ("channel", "tensor"),
               "Fp8Linear needs an FP8 per-channel (or per-tensor) weight")
        _check(ql, a is not None and a.type == "float" and a.granularity in ("token", "tensor"),
               "Fp8Linear needs FP8 per-token (dynamic) or per-tensor activations")
        dev = ql.w_scale.device
        require("torch._scaled_mm", dev)
        # rowwise scaling (CUTLASS, sm89+/sm90) is what makes FP8 fast; without it the exact path runs
        self.rowwise = dev.type == "cuda" and _probe("torch._scaled_mm rowwise", str(dev)) is None
        if dev.type == "cuda" and not self.rowwise:
            self.kernel += " (no rowwise scaling here: fp32 out, rescaled after)"
        # CUDA: K and N multiples of 16; zero-padded once here (none of the bench's shapes needs it)
        m = 16 if dev.type == "cuda" else 1
        self.k_pad = -(-self.in_features // m) * m
        q = _pad_to(_pad_to(ql.qweight.view(torch.uint8), 1, m), 0, m).view(torch.float8_e4m3fn)
        self.register_buffer("qweight", q.contiguous())                                 # [out, in] e4m3
        ws = ql.w_scale.float().reshape(1, -1).expand(1, self.out_features)
        self.register_buffer("w_scale", _pad_to(ws, 1, m, 0).contiguous())              # [1, out] fp32
        # calibration leaves a static scale 0-dim on the CPU (it broadcasts in the simulation); the kernel needs it here
        self.register_buffer("act_scale", None if a.dynamic
                             else ql.act_scale.reshape(1, 1).float().to(ql.w_scale.device))
        self.register_buffer("one", torch.ones((), device=dev), persistent=False)

    def _mm(self, x2, s):
        q = quantize_fp8(x2.float(), s)
        if self.k_pad != self.in_features:
            q = _pad_to(q.view(torch.uint8), 1, self.k_pad).view(torch.float8_e4m3fn)
        if self.rowwise and x2.dtype == torch.bfloat16:   # rowwise scales inside the matmul, bf16 out
            sa = s if s.shape[0] == q.shape[0] else s.expand(q.shape[0], 1).contiguous()
            y = torch._scaled_mm(q, self.qweight.t(), scale_a=sa, scale_b=self.w_scale, out_dtype=torch.bfloat16,
                                 use_fast_accum=self.fast_accum)
        else:                                             # exact path: fp32 accumulation, then the rescale
            y = torch._scaled_mm(q, self.qweight.t(), scale_a=self.one, scale_b=self.one, out_dtype=torch.float32)
            y = y * s * self.w_scale
        return y[:, :self.out_features]

    def dequantized_weight(self):
        return (self.qweight.float() * self.w_scale.t())[:self.out_features, :self.in_features]


class Int8WOLinear(RealLinear):
    """W8A16: int8 per-channel weights, activations in 16 (or 32) bits."""

    kernel = "w8a16 torch._weight_int8pack_mm"

    def __init__(self, ql: QuantLinear):
        super().__init__(ql)
        w = ql.weight_spec
        _check(ql, w.type == "int" and w.bits == 8 and w.symmetric and w.granularity == "channel"
               and ql.act_spec is None, "Int8WOLinear needs int8 symmetric per-channel weights and no "
               "activation quantizer")
        dev = ql.w_scale.device
        self.gemv = gemv.available(dev)
        if dev.type == "cpu":
            require("torch._weight_int8pack_mm", dev)
        else:
            self.kernel = "w8a16 dequantize-matmul (fused under torch.compile)"
        if self.gemv:
            self.kernel = f"w8a16 Triton GEMV (rows <= {gemv.MAX_ROWS}), else " + self.kernel.split(" ", 1)[1]
        self.register_buffer("qweight", ql.qweight.contiguous())             # [out, in] int8
        # [out]; on the CPU already in the kernel's dtype (inductor's lowering wants the scale realized)
        self.register_buffer("w_scale", ql.w_scale.reshape(-1).to(CPU_WO_DTYPE if dev.type == "cpu" else torch.float32))

    def _mm(self, x2, s):
        if self.gemv and x2.shape[0] <= gemv.MAX_ROWS:   # decode: the scale and cast fuse into the next kernel
            return gemv.int8_gemv_scaled(x2.contiguous(), self.qweight, self.w_scale.float())
        if x2.is_cuda:
            return F.linear(x2, self.qweight.to(x2.dtype)) * self.w_scale.to(x2.dtype)
        dt = CPU_WO_DTYPE if x2.dtype == torch.float32 else x2.dtype
        scale = self.w_scale if self.w_scale.dtype == dt else self.w_scale.to(dt)
        return torch._weight_int8pack_mm(x2.to(dt), self.qweight, scale)

    def dequantized_weight(self):
        return self.qweight.float() * self.w_scale.float().unsqueeze(1)

    def gated(self, gate_up: torch.Tensor) -> torch.Tensor | None:
        """This linear on silu(gate) * up, from a gated MLP's [gate | up] output, with the activation in the
        GEMV's prologue (decode rows on the Triton GEMV, K not split); None elsewhere, or when hooks on this
        module must see its input (the caller then computes the product and calls the module)."""
        x2 = gate_up.reshape(-1, 2 * self.in_features)
        if not self.gemv or x2.shape[0] > gemv.MAX_ROWS or self._forward_pre_hooks or self._forward_hooks:
            return None
        y = gemv.int8_gemv_gated(x2, self.qweight, self.w_scale.float())
        if y is None:
            return None
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*gate_up.shape[:-1], self.out_features).to(gate_up.dtype)


class Int4WOLinear(RealLinear):
    """W4A16: int4 group-wise weights (symmetric, integer or float zero points) in tinygemm's layout."""

    kernel = "w4a16 int4 pack (tinygemm layout)"

    def __init__(self, ql: QuantLinear):
        super().__init__(ql)
        w = ql.weight_spec
        _check(ql, w.type == "int" and w.bits == 4 and w.granularity == "group" and ql.act_spec is None,
               "Int4WOLinear needs int4 group-wise weights and no activation quantizer")
        dev = ql.w_scale.device
        require("int4 pack (tinygemm)", dev)
        self.kernel = "w4a16 " + ("torch._weight_int4pack_mm" if dev.type == "cuda" else
                                  "torch._weight_int4pack_mm_for_cpu")
        self.group_size = ql.group_size
        # the kernels take activations and scales in one dtype: bf16 (CUDA needs it; on the CPU it is the
        # vectorised path). Re-packed for another dtype on first use (e.g. an fp16 model on CUDA).
        packed, sz = tinygemm_pack(ql.codes(), ql.w_scale, ql.w_zero, self.group_size, torch.bfloat16,
                                   float_zero=getattr(ql, "float_zero", False))   # issue 15's zero_point "float"
        # decode on the GEMV: the codes as bytes (one copy of the weight; prefill repacks it for tinygemm)
        # (per shape where the sweep's table names it: SYSQ_GEMV_CONFIGS / gemv.TUNED; "tinygemm" keeps this one)
        self.gemv = gemv.int4_gemv_for(dev, self.in_features, self.out_features)
        if self.gemv:    # the tensor-core GEMVs read their own layouts (tc: int16 words, mma: int32 words)
            name = gemv.module_kernel(self.in_features, self.out_features, self.group_size)
            packed = {"tc": gemv.pack_int4_tc, "mma": gemv.pack_int4_mma}.get(name, gemv.pack_nibbles)(ql.codes())
            self.kernel = f"w4a16 {'CUDA' if name == 'mma' else 'Triton'} GEMV ({name}, rows <= " \
                          f"{gemv.MAX_ROWS}), else {self.kernel.split(' ', 1)[1]} repacked per call"
        self.register_buffer("qweight", packed)
        self.register_buffer("scales_zeros", sz)

    def _mm(self, x2, s):
        dt = torch.bfloat16 if x2.dtype == torch.float32 else x2.dtype
        sz = self.scales_zeros if self.scales_zeros.dtype == dt else self.scales_zeros.to(dt)
        x2 = x2.to(dt).contiguous()
        if not self.gemv:
            return _int4_mm(x2, self.qweight, self.group_size, sz)
        if x2.shape[0] <= gemv.MAX_ROWS:
            return gemv.int4_gemv(x2, self.qweight, sz, self.group_size).to(dt)
        if self.qweight.dtype == torch.int32:     # the mma layout: prefill on the dequantized weight (cuBLAS)
            return F.linear(x2, gemv.dequantize_int4(self.qweight, sz, self.group_size).to(dt))
        if x2.is_cuda:   # tinygemm takes these bytes as its packing input
            qb = self.qweight
            if qb.dtype != torch.uint8:                 # pack_int4_tc's words: back to bytes
                qb = gemv.pack_nibbles(gemv.int4_codes(qb) - 8)
            packed = torch._convert_weight_to_int4pack(qb, inner_k_tiles(self.in_features))
        else:
            packed = _pack_for(x2.device, gemv.int4_codes(self.qweight), inner_k_tiles(self.in_features))
        return _int4_mm(x2, packed, self.group_size, sz)

    def dequantized_weight(self):
        if self.gemv:
            return gemv.dequantize_int4(self.qweight, self.scales_zeros, self.group_size)
        return tinygemm_dequantize(self.qweight, self.scales_zeros, self.group_size, self.in_features)


MODULES = {"int8": Int8Linear, "fp8": Fp8Linear, "int8-wo": Int8WOLinear, "int4-wo": Int4WOLinear}

