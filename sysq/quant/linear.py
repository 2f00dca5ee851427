"""QuantLinear: a linear with a weight quantizer and an input-activation quantizer (simulated INT math).

Life cycle (driven by sysq.quant.api):
  1. QuantLinear(linear, weight_spec, act_spec): float weight kept, forward is the float linear.
  2. calibrating=True: forward records the static activation range (RangeObserver) of the tokens and
     channels that are not preserved; finish_calibration() turns it into act_scale / act_zero.
  3. quantize_weight() (round to nearest) or set_quantized_weight(q, scale, zero) (GPTQ): integer codes
     replace the float weight; INT4 codes are stored packed two per byte (also in memory). FP8 specs
     (type 'float') store float8_e4m3fn codes with a per-channel scale, and a per-tensor act_scale when
     static: the state an FP8 checkpoint holds (weight, weight_scale, input_scale). w_zero is int8
     (integer zero points), float32 for weight_spec.zero_point "float" (x_hat = q * scale + zero), absent
     when symmetric.

Mitigation fields (set them before calibration):
  act_spec.preserve_threshold / preserve_positions   tokens kept in float (and out of static ranges)
  act_spec.clip_ratio / weight_spec.clip_ratio        range shrink (static activation scale, weight rows)
  preserve_channels (LongTensor of input channels)    computed in float, or INT8 when preserve_channels_bits=8:
                                                      W[:, P] is kept apart, x[..., P] is not quantized to
                                                      the layer's bits and both are left out of the ranges.
  act_scale / act_zero                                static activation qparams may also be set directly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SysqError
from .math import (FP8, FP8_MIN_NORMAL, dequantize_tensor, fake_quantize, fake_quantize_tensor, pack_int4, qparams,
                   qparams_from_range, quantize, quantize_tensor, rows, unpack_int4)
from .observers import RangeObserver, token_keep_mask
from .recipes import QuantSpec


def effective_group_size(spec: QuantSpec | None, in_features: int, ragged: str = "error") -> int | None:
    """The group size used for a row of `in_features`: the spec's, or halved until it divides (ragged='halve')."""
    if spec is None or spec.granularity != "group":
        return None
    g = spec.group_size
    if ragged == "halve":
        while g > 1 and in_features % g:
            g //= 2
    if in_features % g:
        raise SysqError(f"group_size={spec.group_size} does not divide in_features={in_features}; choose a divisor "
                        "of every linear's input size, or set ragged: halve in the recipe")
    return g


class QuantLinear(nn.Module):
    # Simulation speed: keep the dequantized float weight next to the codes after the first forward.
    # Set QuantLinear.cache_weights = False to hold only codes + scales in memory (dequantize per call).
    cache_weights = True

    def __init__(self, linear: nn.Linear | None, weight_spec: QuantSpec | None, act_spec: QuantSpec | None,
                 name: str = "", ragged: str = "error", preserve_channels=None, preserve_channels_bits: int | None = None,
                 in_features: int | None = None, out_features: int | None = None, bias: bool | None = None):
        super().__init__()
        if linear is not None:
            in_features, out_features, bias = linear.in_features, linear.out_features, linear.bias is not None
        self.in_features, self.out_features, self.name = in_features, out_features, name
        self.weight_spec, self.act_spec, self.ragged = weight_spec, act_spec, ragged
        self.group_size = effective_group_size(weight_spec, in_features, ragged)
        self.act_group_size = effective_group_size(act_spec, in_features, ragged)
        if linear is not None:
            self.weight = nn.Parameter(linear.weight.detach(), requires_grad=False)
            self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)
        else:   # an empty shell for loading a saved model: buffers come from the state dict
            self.register_parameter("weight", None)
            self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        pc = None if preserve_channels is None or len(preserve_channels) == 0 else \
            torch.as_tensor(preserve_channels, dtype=torch.long).unique()
        if pc is not None and (int(pc.min()) < 0 or int(pc.max()) >= in_features):
            raise SysqError(f"{name}: preserve_channels must lie in [0, {in_features}), got {pc.tolist()[:8]}...")
        if pc is not None and linear is not None:      # beside the weight: GPU kernels index with it
            pc = pc.to(linear.weight.device)
        self.register_buffer("preserve_channels", pc)
        self.preserve_channels_bits = preserve_channels_bits
        self.register_buffer("act_scale", None)
        self.register_buffer("act_zero", None)
        for b in ("qweight", "w_scale", "w_zero", "w_keep", "w_keep_scale"):
            self.register_buffer(b, None)
        self.packed = False
        self._wcache = None          # dequantized weight, kept for speed when cache_weights (not saved)
        self._ccache = None          # the weight codes as fp32, for the integer product (not saved)
        self.calibrating = False
        self.observer: RangeObserver | None = None

    def _apply(self, fn, recurse=True):
        self._wcache = self._ccache = None   # speed copies, rebuilt on the next forward wherever the module now lives
        return super()._apply(fn, recurse)

    # ---- weights ---------------------------------------------------------------------------------
    @property
    def float_zero(self) -> bool:
        return self.weight_spec is not None and self.weight_spec.zero_point == "float"

    @property
    def quantized(self) -> bool:
        return self.qweight is not None or self.weight_spec is None

    def float_weight(self) -> torch.Tensor:
        return self.weight.data if self.weight is not None else self.dequantized_weight()

    def _masked(self, w: torch.Tensor) -> torch.Tensor:
        """The weight with preserved input columns zeroed (they are stored apart)."""
        if self.preserve_channels is None:
            return w
        w = w.clone()
        w[:, self.preserve_channels] = 0
        return w

    def quantize_weight(self) -> None:
        """Round to nearest with the weight spec (per tensor / channel / group, clip_ratio, MSE search)."""
        s = self.weight_spec
        if s is None or self.qweight is not None:
            return
        q, scale, zero = quantize_tensor(self._masked(self.weight.data.float()), s.bits, s.symmetric, s.granularity,
                                         self.group_size, s.clip_ratio, s.mse, self.float_zero, s.type)
        self.set_quantized_weight(q, scale, zero)

    def set_quantized_weight(self, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> None:
        """Store codes [out, in] (int8 values) with scale/zero [out, groups] and drop the float weight."""
        s = self.weight_spec
        w = self.weight.data.float()
        if self.preserve_channels is not None:
            keep = w[:, self.preserve_channels]
            if self.preserve_channels_bits == 8:
                kq, ks, _ = quantize_tensor(keep, 8, True, "channel")
                self.w_keep, self.w_keep_scale = kq, ks
            else:
                self.w_keep = keep.to(self.weight.dtype)
        self.packed = s.bits == 4 and self.in_features % 2 == 0
        self.qweight = pack_int4(q) if self.packed else q.to(FP8 if s.type == "float" else torch.int8)
        self.w_scale = scale.float()
        self.w_zero = None if s.symmetric else zero.float() if self.float_zero else zero.to(torch.int8)
        self.weight = None
        self._wcache = self._ccache = None

    def codes(self) -> torch.Tensor:
        return unpack_int4(self.qweight) if self.packed else self.qweight

    def dequantized_weight(self, dtype=torch.float32) -> torch.Tensor:
        zero = self.w_zero.float() if self.w_zero is not None else torch.zeros_like(self.w_scale)
        w = dequantize_tensor(self.codes(), self.w_scale, zero, float_zero=self.float_zero)
        if self.preserve_channels is not None:
            keep = self.w_keep.float()
            if self.w_keep_scale is not None:
                keep = keep * self.w_keep_scale
            w[:, self.preserve_channels] = keep
        return w.to(dtype)

    # ---- activations -----------------------------------------------------------------------------
    def _range_input(self, x: torch.Tensor, keep):
        """x with preserved channels and tokens zeroed: what the activation range must cover."""
        if self.preserve_channels is None and keep is None:
            return x
        xs = x.clone()
        if self.preserve_channels is not None:
            xs[..., self.preserve_channels] = 0
        if keep is not None:
            xs = xs.masked_fill(keep.unsqueeze(-1), 0)
        return xs

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantize_input_parts(x)[0]

    def quantize_input_parts(self, x: torch.Tensor):
        """(quantize_input(x), the dynamic quantizer's scale [R, 1] on rows(x, granularity, act_group_size) or None,
        the preserved tokens' mask [..., seq] or None). The scale comes from x's ordinary entries (preserved
        channels and tokens left out)."""
        s = self.act_spec
        if s is None:
            return x, None, None
        keep = token_keep_mask(x, s.preserve_threshold, s.preserve_positions)
        scale = None
        if s.dynamic:
            xs = self._range_input(x, keep)
            scale, zero = qparams(xs, s.bits, s.symmetric, s.granularity, self.act_group_size, s.clip_ratio, type=s.type)
            xq = fake_quantize(rows(x, s.granularity, self.act_group_size).float(), scale, zero, s.bits, type=s.type)
            xq = xq.reshape(x.shape).to(x.dtype)
        else:
            if self.act_scale is None:
                raise SysqError(f"{self.name}: the static activation scale is not calibrated; pass calibration "
                                "windows to sysq.quantize(model, recipe, calib)")
            xq = fake_quantize(x.float(), self.act_scale, self.act_zero, s.bits, type=s.type).to(x.dtype)
        if self.preserve_channels is not None:
            xp = x[..., self.preserve_channels]
            if self.preserve_channels_bits == 8:
                xp = fake_quantize_tensor(xp, 8, True, "token")
            xq[..., self.preserve_channels] = xp
        if keep is not None:
            xq = torch.where(keep.unsqueeze(-1), x, xq)
        return xq, scale, keep

    def input_error(self, x: torch.Tensor) -> dict:
        """What the activation quantizer does to the ordinary entries of x (preserved tokens left out): counts of
        nonzero entries, of those rounded to 0, of those in FP8 e4m3's subnormal range (|x / scale| < 2^-6),
        and the sums of squared error and of squares."""
        s = self.act_spec
        xf, xq = x.detach().float(), self.quantize_input(x).float()
        keep = token_keep_mask(xf, s.preserve_threshold, s.preserve_positions)
        if keep is not None:
            xf, xq = xf[~keep], xq[~keep]
        nz = xf != 0
        sub = torch.zeros_like(nz)
        if s.type == "float":
            scale = qparams(xf, s.bits, s.symmetric, s.granularity, self.act_group_size, s.clip_ratio, type=s.type)[0] \
                if s.dynamic else self.act_scale
            r = rows(xf, s.granularity, self.act_group_size).abs() / scale if s.dynamic else xf.abs() / scale
            sub = (r.reshape(xf.shape) < FP8_MIN_NORMAL) & nz
        return {"nonzero": int(nz.sum()), "zero": int((nz & (xq == 0)).sum()), "subnormal": int(sub.sum()),
                "err2": float((xf - xq).pow(2).sum()), "sq": float(xf.pow(2).sum())}

    def start_calibration(self) -> None:
        self.calibrating, self.observer = True, RangeObserver()

    def finish_calibration(self) -> None:
        """Static activation qparams from the observed range, shrunk by act_spec.clip_ratio."""
        s, o = self.act_spec, self.observer
        self.calibrating = False
        if s is None or s.dynamic or o is None:
            return
        if o.tokens == 0:
            raise SysqError(f"{self.name}: no calibration tokens reached this linear")
        lo = torch.tensor(o.min if o.min != float("inf") else 0.0) * s.clip_ratio
        hi = torch.tensor(o.max if o.max != float("-inf") else 0.0) * s.clip_ratio
        self.act_scale, self.act_zero = qparams_from_range(lo, hi, s.bits, s.symmetric, type=s.type)

    @property
    def integer_product(self) -> bool:
        """INT8 W8A8 as an integer kernel runs it (Int8Linear: symmetric per-channel weights, symmetric per-token or
        per-tensor activations, no preserved channels): the product of the codes is exact."""
        w, a = self.weight_spec, self.act_spec
        return (w is not None and a is not None and self.qweight is not None and self.preserve_channels is None
                and w.type == a.type == "int" and w.bits == a.bits == 8 and w.symmetric and a.symmetric
                and w.granularity == "channel" and a.granularity in ("token", "tensor"))

    def _integer_forward(self, x: torch.Tensor) -> torch.Tensor:
        """fp32 INT8 W8A8 in Int8Linear's order: codes times codes (exact in fp32 while the sums stay under 2^24,
        as the int32 accumulator holds them), then the activation and weight scales; preserved tokens in float.
        The same numbers as the real kernel, bit for bit: a model whose static scales round most values to a
        step of 0 or 1 turns float-rounding noise into a different perplexity (docs/KERNELS.md, real against
        simulated)."""
        s = self.act_spec
        x2 = x.reshape(-1, self.in_features)
        keep = token_keep_mask(x, s.preserve_threshold, s.preserve_positions)
        keep = None if keep is None else keep.reshape(-1)
        if s.dynamic:
            xs = x2 if keep is None else x2.masked_fill(keep.unsqueeze(-1), 0)
            scale = qparams(xs, s.bits, s.symmetric, s.granularity, None, s.clip_ratio)[0]
        else:
            scale = self.act_scale.reshape(1, 1)
        wc = self._ccache if self._ccache is not None else self.codes().float()
        if self.cache_weights:
            self._ccache = wc
        y = F.linear(quantize(x2, scale, 0.0, s.bits).float(), wc) * scale * self.w_scale.reshape(1, -1)
        if keep is not None and bool(keep.any()):
            y[keep] = x2[keep] @ (wc * self.w_scale.reshape(-1, 1)).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            s = self.act_spec
            keep = token_keep_mask(x, s.preserve_threshold, s.preserve_positions) if s is not None else None
            self.observer.update(x, keep, self.preserve_channels)
            return F.linear(x, self.float_weight().to(x.dtype), self.bias)
        if x.dtype == torch.float32 and self.integer_product:
            return self._integer_forward(x)
        if self.weight is not None:
            w = self.weight.to(x.dtype)
        elif self.cache_weights:
            w = self._wcache if self._wcache is not None and self._wcache.dtype == x.dtype else None
            if w is None:
                w = self._wcache = self.dequantized_weight(x.dtype)
        else:
            w = self.dequantized_weight(x.dtype)
        return F.linear(self.quantize_input(x), w, self.bias)

    def extra_repr(self) -> str:
        def fmt(s, g):
            if s is None:
                return "float"
            gran = f"g{g}" if s.granularity == "group" else s.granularity
            if s.type == "float":
                return f"fp8 e4m3 {gran}"
            fz = " float-zero" if s.zero_point == "float" else ""
            return f"int{s.bits} {'sym' if s.symmetric else 'asym'}{fz} {gran}"
        extra = f", preserve_channels={len(self.preserve_channels)}" if self.preserve_channels is not None else ""
        a = fmt(self.act_spec, self.act_group_size)
        if self.act_spec is not None:
            a += " dynamic" if self.act_spec.dynamic else " static"
        return (f"{self.name or ''} in={self.in_features}, out={self.out_features}, "
                f"w={fmt(self.weight_spec, self.group_size)}, a={a}{extra}")
