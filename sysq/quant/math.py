"""Quantizer math as free functions on tensors (gpt-fast style).

Integer codes are always *signed*: q in [-2^(b-1), 2^(b-1) - 1] for b in {2, 3, 4, 8}, so INT8 codes fit
int8 and INT4 codes pack two per byte. Symmetric: zero = 0, scale = amax / (2^(b-1) - 1). Asymmetric:
scale = (max - min) / (2^b - 1) and an integer zero point in the same signed range, chosen so that
0.0 is exactly representable (range always includes 0).

    q = clamp(round(x / scale) + zero, qmin, qmax)        x_hat = (q - zero) * scale

FP8 (type "float", compressed-tensors' naming): codes are torch.float8_e4m3fn values, symmetric only,
scale = amax / 448 (e4m3's largest finite value), zero = 0. The cast rounds to nearest even; magnitudes
below 2^-6 land in e4m3's subnormals (steps of 2^-9) and below 2^-10 flush to zero.

    q = fp8(clamp(x / scale, -448, 448))                   x_hat = float(q) * scale

Float zero point (`float_zero=True`, QuantSpec.zero_point "float"; asymmetric weights only): the zero is a
float *offset*, the value of code 0, and the range is [min, max] as found (it need not include 0), as GGUF's
Q4_1, HQQ and torchao's tinygemm int4 layout keep it:

    q = clamp(round((x - zero) / scale), qmin, qmax)      x_hat = q * scale + zero,  zero = min - qmin * scale

With u = q - qmin the unsigned code, x_hat = u * scale + min: Q4_1's d * u + m. The tinygemm layout
(_weight_int4pack_mm: (u - 8) * scale + zero) takes these codes plus 8 and the same scale and zero unchanged.

Granularity says which elements share one (scale, zero), always over the last dimension:
  tensor  one pair for the whole tensor
  channel one pair per row (a weight [out, in]: per output channel)
  token   one pair per row of an activation [..., in]: per token (same reduction as channel)
  group   one pair per `group_size` consecutive elements of each row
"""
from __future__ import annotations

import torch

from ..errors import SysqError

BITS = (2, 3, 4, 8)
TYPES = ("int", "float")            # integer grid, or FP8 e4m3 (8 bits, symmetric)
GRANULARITIES = ("tensor", "channel", "token", "group")
MIN_SCALE = 1e-10   # an all-zero row gets this scale: its codes are 0 and it dequantizes to exactly 0
FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)           # 448
FP8_MIN_NORMAL = float(torch.finfo(FP8).tiny)   # 2^-6: below it e4m3 is subnormal (absolute steps of 2^-9)


def check_type(bits: int, symmetric: bool, type: str) -> None:
    if type not in TYPES:
        raise SysqError(f"type={type!r} is not supported; allowed: {', '.join(TYPES)}")
    if type == "float" and (bits != 8 or not symmetric):
        raise SysqError(f"type 'float' is FP8 e4m3: it needs bits=8 and symmetric=True (got bits={bits}, "
                        f"symmetric={symmetric})")


def qrange(bits: int) -> tuple[int, int]:
    if bits not in BITS:
        raise SysqError(f"bits={bits} is not supported; allowed: {', '.join(map(str, BITS))}")
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def rows(x: torch.Tensor, granularity: str, group_size: int | None = None) -> torch.Tensor:
    """View `x` as [R, n] so that each row shares one (scale, zero)."""
    if granularity == "tensor":
        return x.reshape(1, -1)
    if granularity in ("channel", "token"):
        return x.reshape(-1, x.shape[-1])
    if granularity == "group":
        if not group_size or group_size <= 0:
            raise SysqError("granularity 'group' needs a positive group_size (e.g. 128)")
        if x.shape[-1] % group_size:
            raise SysqError(
                f"group_size={group_size} does not divide the last dimension {x.shape[-1]} of a tensor of shape "
                f"{tuple(x.shape)}; use a group size that divides it (or granularity 'channel')")
        return x.reshape(-1, group_size)
    raise SysqError(f"unknown granularity {granularity!r}; allowed: {', '.join(GRANULARITIES)}")


def qparams_from_range(xmin: torch.Tensor, xmax: torch.Tensor, bits: int, symmetric: bool,
                       float_zero: bool = False, type: str = "int"):
    """(scale, zero) from a range. Shapes broadcast; zero is a float tensor holding integers (float_zero: the
    float offset, the value of code 0; type 'float': FP8, zero 0)."""
    if type == "float":
        check_type(bits, symmetric, type)
        scale = (torch.maximum(xmin.abs(), xmax.abs()) / FP8_MAX).clamp_min(MIN_SCALE)
        return scale, torch.zeros_like(scale)
    qmin, qmax = qrange(bits)
    if float_zero:
        if symmetric:
            raise SysqError("a float zero point needs an asymmetric quantizer: set symmetric false or zero_point int")
        scale = ((xmax - xmin) / (qmax - qmin)).clamp_min(MIN_SCALE)
        return scale, xmin - qmin * scale
    if symmetric:
        amax = torch.maximum(xmin.abs(), xmax.abs())
        scale = (amax / qmax).clamp_min(MIN_SCALE)
        return scale, torch.zeros_like(scale)
    xmin, xmax = xmin.clamp_max(0), xmax.clamp_min(0)
    scale = ((xmax - xmin) / (qmax - qmin)).clamp_min(MIN_SCALE)
    zero = (qmin - torch.round(xmin / scale)).clamp(qmin, qmax)
    return scale, zero


def quantize_fp8(x: torch.Tensor, scale) -> torch.Tensor:
    """FP8 e4m3 codes of x / scale (saturating at +-448: the plain cast would turn larger values into NaN)."""
    return (x / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)


def quantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int,
             float_zero: bool = False, type: str = "int") -> torch.Tensor:
    """Integer codes as int8, or FP8 codes as float8_e4m3fn (shapes of x and scale/zero must broadcast)."""
    if type == "float":
        return quantize_fp8(x, scale)
    qmin, qmax = qrange(bits)
    if float_zero:
        return torch.clamp(torch.round((x - zero) / scale), qmin, qmax).to(torch.int8)
    return torch.clamp(torch.round(x / scale) + zero, qmin, qmax).to(torch.int8)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, float_zero: bool = False) -> torch.Tensor:
    if float_zero:
        return q.to(scale.dtype) * scale + zero
    return (q.to(scale.dtype) - zero) * scale


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int,
                  float_zero: bool = False, type: str = "int") -> torch.Tensor:
    """quantize then dequantize, in x's dtype (what a simulated INT or FP8 kernel sees)."""
    if type == "float":
        return quantize_fp8(x, scale).float().mul_(scale).to(x.dtype)
    qmin, qmax = qrange(bits)
    if float_zero:
        return torch.round((x - zero) / scale).clamp_(qmin, qmax).mul_(scale).add_(zero).to(x.dtype)
    q = torch.round(x / scale)          # in-place steps below: same numbers, fewer passes over memory
    if isinstance(zero, torch.Tensor) and bool(zero.any()):
        return q.add_(zero).clamp_(qmin, qmax).sub_(zero).mul_(scale).to(x.dtype)
    return q.clamp_(qmin, qmax).mul_(scale).to(x.dtype)


def qparams(x: torch.Tensor, bits: int, symmetric: bool = True, granularity: str = "channel",
            group_size: int | None = None, clip_ratio: float = 1.0, mse: bool = False, float_zero: bool = False,
            type: str = "int"):
    """(scale, zero) of shape [R, 1] for `rows(x, granularity, group_size)`; round-to-nearest ranges,
    shrunk by clip_ratio, or the MSE-optimal shrink per row when mse=True."""
    r = rows(x, granularity, group_size).float()
    if mse:
        return mse_qparams(r, bits, symmetric, float_zero=float_zero, type=type)
    # amin and amax: the same numbers as torch.aminmax, which is ~10x slower along a dim on a CPU (torch 2.13)
    xmin, xmax = r.amin(1, keepdim=True), r.amax(1, keepdim=True)
    if clip_ratio != 1.0:
        xmin, xmax = xmin * clip_ratio, xmax * clip_ratio
    return qparams_from_range(xmin, xmax, bits, symmetric, float_zero, type)


def quantize_tensor(x: torch.Tensor, bits: int, symmetric: bool = True, granularity: str = "channel",
                    group_size: int | None = None, clip_ratio: float = 1.0, mse: bool = False,
                    float_zero: bool = False, type: str = "int"):
    """Codes with x's shape (int8, or float8_e4m3fn for type 'float'), scale and zero of shape
    [*x.shape[:-1], n_groups] (or [1, 1] per tensor)."""
    scale, zero = qparams(x, bits, symmetric, granularity, group_size, clip_ratio, mse, float_zero, type)
    r = rows(x, granularity, group_size)
    q = quantize(r.float(), scale, zero, bits, float_zero, type).reshape(x.shape)
    if granularity == "tensor":
        return q, scale, zero
    shape = (*x.shape[:-1], -1)
    return q, scale.reshape(shape), zero.reshape(shape)


def dequantize_tensor(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, dtype=torch.float32,
                      float_zero: bool = False) -> torch.Tensor:
    """Inverse of quantize_tensor: scale/zero [..., n_groups] expand over groups of the last dim."""
    if scale.numel() == 1:
        return dequantize(q, scale.reshape(()), zero.reshape(()), float_zero).to(dtype)
    n = scale.shape[-1]
    qg = q.reshape(*q.shape[:-1], n, q.shape[-1] // n)     # [..., groups, group_size]
    return dequantize(qg, scale.unsqueeze(-1), zero.unsqueeze(-1), float_zero).reshape(q.shape).to(dtype)


def fake_quantize_tensor(x: torch.Tensor, bits: int, symmetric: bool = True, granularity: str = "token",
                         group_size: int | None = None, clip_ratio: float = 1.0, mse: bool = False,
                         float_zero: bool = False, type: str = "int") -> torch.Tensor:
    """Dynamic fake quantization: scales from x itself, result with x's shape and dtype."""
    scale, zero = qparams(x, bits, symmetric, granularity, group_size, clip_ratio, mse, float_zero, type)
    r = rows(x, granularity, group_size)
    return fake_quantize(r.float(), scale, zero, bits, float_zero, type).reshape(x.shape).to(x.dtype)


def mse_qparams(r: torch.Tensor, bits: int, symmetric: bool, grid: int = 80, max_shrink: float = 0.8,
                norm: float = 2.4, float_zero: bool = False, type: str = "int"):
    """Per row of r [R, n], the range shrink factor in (1 - max_shrink, 1] minimising sum |x - x_hat|^norm
    (the search of GPTQ's reference quantizer)."""
    xmin, xmax = r.amin(dim=1, keepdim=True), r.amax(dim=1, keepdim=True)
    best_err = torch.full_like(xmin, float("inf"))
    best_scale, best_zero = qparams_from_range(xmin, xmax, bits, symmetric, float_zero, type)
    for i in range(int(max_shrink * grid)):
        p = 1 - i / grid
        scale, zero = qparams_from_range(xmin * p, xmax * p, bits, symmetric, float_zero, type)
        err = (fake_quantize(r, scale, zero, bits, float_zero, type) - r).abs().pow(norm).sum(dim=1, keepdim=True)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
        best_zero = torch.where(better, zero, best_zero)
    return best_scale, best_zero


# ---- packing: two INT4 codes per byte -----------------------------------------------------------

def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """int8 codes in [-8, 7], last dim even -> uint8 with half the last dim (low nibble = even index)."""
    if q.shape[-1] % 2:
        raise SysqError(f"pack_int4 needs an even last dimension, got shape {tuple(q.shape)}")
    u = (q.to(torch.int16) + 8).to(torch.uint8)
    return u[..., 0::2] | (u[..., 1::2] << 4)


def unpack_int4(p: torch.Tensor) -> torch.Tensor:
    lo = (p & 0x0F).to(torch.int8) - 8
    hi = (p >> 4).to(torch.int8) - 8
    return torch.stack((lo, hi), dim=-1).reshape(*p.shape[:-1], p.shape[-1] * 2)
