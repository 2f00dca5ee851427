"""Learned rounding and clipping, block by block against each decoder layer's output.

Sources: AutoRound (Cheng et al. 2023, arXiv 2309.05516): a rounding offset V per weight and a clip factor for
each group's max and min, trained with signed gradient descent on a block's output; OmniQuant's learnable
weight clipping (Shao et al. 2023, arXiv 2308.13137).

For each quantized linear of one decoder layer, with (lo, hi) the (row, group) range of the weight:

    scale, zero = qparams_from_range(b * lo, a * hi)      a, b in [clip_min, 1] per (row, group)
    W_hat       = dequantize(clamp(round(W / scale + V) ...), scale, zero)          V in [-1/2, 1/2] per weight

(the same formulas as sysq.quant.math, for integer, float and symmetric zero points; round is a
straight-through estimator while training). V, a and b minimise || layer_q(X_q) - layer(X) ||^2, where layer(X)
is the float layer on the float model's inputs and X_q are the inputs the already-quantized layers produce
(AutoRound's default), by SignSGD: p -= lr * sign(grad), lr decaying linearly to 0 over `steps`, one batch of
`batch_size` calibration windows per step, drawn by a generator seeded with (seed, layer): deterministic. When a
step takes every window, the state of the step with the lowest loss is kept if it beats the last (AutoRound).
Activation quantizers (w4a8, w4a4) stay on during training, straight-through.

act_clip=True also learns each dynamic INT activation quantizer's clip ratio c (scale = c * max|x| / qmax per token
or group), one per input that linears quantize alike (q, k, v; gate, up), by the same SignSGD, with LSQ's gradient
(Esser et al. 2019, arXiv 1902.08153): d x_hat / d scale = round(x / scale) - x / scale inside the grid, the clamped
code outside it. It starts at the recipe's (or the plan's) ratio, stays in [clip_min, 1] and is stored in the
linear's activation spec.

Guarantee: the learned weights are kept only when their output error over all calibration windows is below
round-to-nearest's for the same layer and inputs; otherwise the layer gets RTN. RTN's error is summed window by window
only until it passes the learned weights' total (the terms are >= 0, so that decides it: typically a third of the
windows, as learned rounding reaches ~0.3x RTN's error).

`learn_block(layer, ...)` works on one layer and its cached inputs, so a layer-sequential pipeline can call it;
`learn_model(model, calib)` runs it over every layer in memory.
"""
from __future__ import annotations

import logging
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..arch import get_adapter
from ..errors import SysqError
from . import cpu_kernels
from .gptq import layer_inputs, run_layer
from .linear import QuantLinear
from .math import MIN_SCALE, fake_quantize_tensor, qrange, rows
from .recipes import act_clip_learnable

log = logging.getLogger(__name__)


@dataclass
class LearnConfig:
    steps: int = 50              # SignSGD steps per layer (AutoRound's default is 200 on a GPU)
    lr: float | None = None      # None: 1 / steps (AutoRound's default)
    batch_size: int = 1          # calibration windows per step
    seed: int = 0
    clip_min: float = 0.5        # clip factors a, b live in [clip_min, 1]
    # "mse": mean squared error over every output element (AutoRound); "token": each token's squared error
    # relative to its own squared norm, averaged over tokens, so the few tokens that carry the systematic
    # outliers (BOS at |h| ~ 25,000 on SmolLM2) weigh as much as any other token instead of all of the loss
    loss: str = "mse"
    # "bf16": each training step's forward and backward under torch.autocast in bfloat16 (AutoRound trains with amp
    # too): 4x the fp32 matmul speed on a CPU with AVX512-BF16; where bf16 is emulated (an AVX2 CPU: a layer's step ~13x
    # slower) learn_model runs the steps in the model's dtype and says so (bf16_native). The parameters, their SignSGD
    # updates and the error passes (RTN against learned, the state kept, the next layer's inputs) stay in the
    # model's dtype.
    amp: str | None = None
    act_clip: bool = False       # learn the dynamic activation quantizers' clip ratios too
    # the attention's linears (and activation clip ratios) train in the first attn_steps steps only (their lr
    # decays over those); the remaining steps train the rest with the attention's output on each window computed
    # once and reused, so a step skips the attention's forward and backward (about half a SmolLM2 step on a CPU).
    # None: every linear trains in every step.
    attn_steps: int | None = None


@dataclass
class BlockResult:
    """One layer: output error (LearnConfig.loss) of RTN and of the learned weights, both over the first `windows`
    calibration windows: RTN's is measured only until its sum passes the learned weights' over all windows, which
    decides `kept` exactly over all of them."""

    layer: int
    rtn: float
    learned: float
    kept: bool                   # False: the learned weights were worse and the layer got RTN
    steps: int
    seconds: float
    act_clip: list[float] = field(default_factory=list)     # the learned activation clip ratios (act_clip=True)
    windows: int = 0

    @property
    def ratio(self) -> float:
        return (self.learned if self.kept else self.rtn) / self.rtn if self.rtn > 0 else 1.0


@dataclass
class LearnSummary:
    layers: list[BlockResult] = field(default_factory=list)
    config: LearnConfig = field(default_factory=LearnConfig)
    windows: int = 0
    seqlen: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        kept = [r for r in self.layers if r.kept]
        c = self.config
        return {"method": "learned", "loss": c.loss, "steps_per_layer": c.steps, "attn_steps": c.attn_steps,
                "lr": c.lr, "batch_size": c.batch_size,
                "seed": c.seed, "amp": c.amp, "act_clip": c.act_clip, "layers": len(self.layers),
                "layers_kept": len(kept), "windows": self.windows, "seqlen": self.seqlen,
                "seconds": round(self.seconds, 1),
                "error_vs_rtn": [round(r.ratio, 4) for r in self.layers],
                **({"act_clip_ratios": [[round(a, 4) for a in r.act_clip] for r in self.layers]} if c.act_clip else {})}

    def __str__(self) -> str:
        kept = sum(r.kept for r in self.layers)
        mean = sum(r.ratio for r in self.layers) / max(len(self.layers), 1)
        c = self.config
        return (f"learned rounding: {len(self.layers)} layers x {c.steps} steps"
                f"{f' ({c.attn_steps} for the attention)' if c.attn_steps is not None else ''} (batch {c.batch_size} of "
                f"{self.windows} windows x {self.seqlen} tokens, loss {c.loss}{', bf16 autocast' if c.amp else ''}"
                f"{', activation clip ratios learned' if c.act_clip else ''}), "
                f"{self.seconds:.1f} s; learned kept in "
                f"{kept} layers, layer output error {mean:.3f}x RTN on average")


LOSSES = ("mse", "token")


def output_loss(out: torch.Tensor, target: torch.Tensor, kind: str = "mse", reduction: str = "mean") -> torch.Tensor:
    """The layer-output objective (LearnConfig.loss): summed or averaged over elements ("mse") or tokens ("token")."""
    if kind == "mse":
        return F.mse_loss(out, target, reduction=reduction)
    per_token = (out - target).pow(2).sum(-1) / target.pow(2).sum(-1).clamp_min(1e-12)
    return per_token.sum() if reduction == "sum" else per_token.mean()


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


class _FloatZeroFakeQuant(torch.autograd.Function):
    """w = clamp(round_ste((r - zero) / scale + V), qmin, qmax) * scale + zero, with float zero points: the
    autograd graph of _Learner.codes + weight written out by hand, because on a CPU the training step spends
    about half its time in this chain's elementwise passes. Each value and each reduction is the one autograd
    computes (same ops, same order; x + (round(x) - x) is round(x) exactly), so the gradients are bit for bit
    the same, with about half the passes over [R, n] and no intermediate kept that backward does not use."""

    @staticmethod
    def forward(ctx, r, V, scale, zero, qmin: int, qmax: int):
        d = (r - zero).div_(scale)                     # u / scale
        q = d.add(V).round_()                          # the straight-through round's value
        outside = (q < qmin).logical_or_(q > qmax)      # clamp passes the gradient where qmin <= x <= qmax
        q.clamp_(qmin, qmax)
        ctx.save_for_backward(q, outside, d.div_(scale), scale)    # (u / scale) / scale: div's grad of scale
        return q.mul(scale).add_(zero)

    @staticmethod
    def backward(ctx, gw):
        q, outside, dd, scale = ctx.saved_tensors
        # the saved tensors serve as scratch (backward runs once): no fresh [R, n] blocks to fault in
        g_zero = gw.sum(1, keepdim=True)                          # w = q * scale + zero
        g_scale = q.mul_(gw).sum(1, keepdim=True)
        g_t = (gw * scale).masked_fill_(outside, 0)               # clamp, then round_ste and + V pass it on
        # sums of negated terms are the negated sums exactly (rounding is symmetric): one pass fewer each
        g_scale = g_scale + dd.mul_(g_t).sum(1, keepdim=True).neg_()     # d = u / scale: -g * (u / scale) / scale
        g_zero = g_zero + torch.div(g_t, scale, out=q).sum(1, keepdim=True).neg_()   # u = r - zero: -g / scale
        return None, g_t, g_scale, g_zero, None, None


class _IntZeroFakeQuant(torch.autograd.Function):
    """w = (clamp(round_ste(r / scale + V) + zero, qmin, qmax) - zero) * scale, integer zero points: the graph of
    _Learner.codes + weight by hand, as _FloatZeroFakeQuant (same ops, same order, the same gradients bit for bit,
    tests/test_quant_learn.py), about half autograd's passes over [R, n]. The zero point's own straight-through
    rounding of lo / scale stays in autograd (an [R, 1] chain)."""

    @staticmethod
    def forward(ctx, r, V, scale, zero, qmin: int, qmax: int):
        d = r / scale
        q = d.add(V).round_().add_(zero)               # the straight-through round's value, plus the zero point
        outside = (q < qmin).logical_or_(q > qmax)      # clamp passes the gradient where qmin <= x <= qmax
        u = q.clamp_(qmin, qmax).sub_(zero)
        ctx.save_for_backward(u, outside, d.div_(scale), scale)    # (r / scale) / scale: div's grad of scale
        return u.mul(scale)

    @staticmethod
    def backward(ctx, gw):
        u, outside, dd, scale = ctx.saved_tensors
        g_scale = u.mul_(gw).sum(1, keepdim=True)                 # w = u * scale
        g_u = gw * scale
        g_zero = g_u.sum(1, keepdim=True).neg_()                  # u = q - zero (a negated sum: exactly so)
        g_t = g_u.masked_fill_(outside, 0)                        # clamp, then + zero, round_ste and + V pass it on
        g_zero = g_zero + g_t.sum(1, keepdim=True)
        g_scale = g_scale + dd.mul_(g_t).sum(1, keepdim=True).neg_()     # d = r / scale: -g * (r / scale) / scale
        return None, g_t, g_scale, g_zero, None, None


class _KernelFakeQuant(torch.autograd.Function):
    """_FloatZeroFakeQuant / _IntZeroFakeQuant in one C pass each way on a CPU (sysq.quant.cpu_kernels): the same w
    and V gradient to the bit; the scale's and zero point's gradients summed in another order."""

    @staticmethod
    def forward(ctx, float_zero: bool, r, V, scale, zero, qmin: int, qmax: int):
        ctx.save_for_backward(r, V, scale, zero)
        ctx.args = (float_zero, qmin, qmax)
        return cpu_kernels.fake_quant_forward(float_zero, r, V, scale, zero, qmin, qmax)

    @staticmethod
    def backward(ctx, gw):
        r, V, scale, zero = ctx.saved_tensors
        float_zero, qmin, qmax = ctx.args
        g_t, g_scale, g_zero = cpu_kernels.fake_quant_backward(float_zero, r, V, scale, zero, gw, qmin, qmax)
        return None, None, g_t, g_scale, g_zero, None, None


class _Learner:
    """The trainable rounding state of one QuantLinear: V [R, n] and clip factors a, b [R, 1] on rows(W)."""

    def __init__(self, q: QuantLinear, clip_min: float):
        s = q.weight_spec
        self.q, self.spec, self.clip_min = q, s, clip_min
        self.float_zero = s.zero_point == "float"
        self.w = q._masked(q.weight.data.float())
        self.r = rows(self.w, s.granularity, q.group_size)
        lo, hi = self.r.amin(1, keepdim=True), self.r.amax(1, keepdim=True)     # as math.qparams
        self.lo, self.hi = lo * s.clip_ratio, hi * s.clip_ratio
        self.V = torch.zeros_like(self.r, requires_grad=True)
        self.a = torch.ones_like(self.lo, requires_grad=True)
        self.b = torch.ones_like(self.lo, requires_grad=True)
        self.keep = None
        if q.preserve_channels is not None:        # stored apart, as QuantLinear.set_quantized_weight keeps them
            keep = q.weight.data.float()[:, q.preserve_channels]
            self.keep = fake_quantize_tensor(keep, 8, True, "channel") if q.preserve_channels_bits == 8 else keep

    def params(self) -> list[torch.Tensor]:
        return [self.V, self.a, self.b]

    def qparams(self, ste: bool):
        """scale, zero [R, 1] of the clipped range (sysq.quant.math.qparams_from_range, round as STE)."""
        rnd = _round_ste if ste else torch.round
        s = self.spec
        qmin, qmax = qrange(s.bits)
        lo, hi = self.lo * self.b, self.hi * self.a
        if s.symmetric:
            scale = (torch.maximum(lo.abs(), hi.abs()) / qmax).clamp_min(MIN_SCALE)
            return scale, torch.zeros_like(scale)
        if self.float_zero:
            scale = ((hi - lo) / (qmax - qmin)).clamp_min(MIN_SCALE)
            return scale, lo - qmin * scale
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
        scale = ((hi - lo) / (qmax - qmin)).clamp_min(MIN_SCALE)
        return scale, (qmin - rnd(lo / scale)).clamp(qmin, qmax)

    def codes(self, ste: bool):
        """(codes as float [R, n], scale, zero): sysq.quant.math.quantize with the offset V added before rounding."""
        rnd = _round_ste if ste else torch.round
        qmin, qmax = qrange(self.spec.bits)
        scale, zero = self.qparams(ste)
        if self.float_zero:
            return torch.clamp(rnd((self.r - zero) / scale + self.V), qmin, qmax), scale, zero
        return torch.clamp(rnd(self.r / scale + self.V) + zero, qmin, qmax), scale, zero

    def weight(self, ste: bool = True) -> torch.Tensor:
        if ste and not self.spec.symmetric:
            qmin, qmax = qrange(self.spec.bits)
            scale, zero = self.qparams(ste)
            if cpu_kernels.applies(self.r, self.V, scale, zero):
                w = _KernelFakeQuant.apply(self.float_zero, self.r, self.V, scale, zero, qmin, qmax)
            else:
                fq = _FloatZeroFakeQuant if self.float_zero else _IntZeroFakeQuant
                w = fq.apply(self.r, self.V, scale, zero, qmin, qmax)
        else:
            q, scale, zero = self.codes(ste)
            w = (q * scale + zero) if self.float_zero else (q - zero) * scale     # sysq.quant.math.dequantize
        w = w.reshape(self.w.shape)
        if self.keep is not None:
            w = w.index_copy(1, self.q.preserve_channels, self.keep)
        return w

    @torch.no_grad()
    def step(self, lr: float) -> None:
        V = self.V
        fused = V.grad is not None and cpu_kernels.applies(V, V.grad)
        if fused:                                      # the update and the clamp in one pass
            cpu_kernels.sign_step_(V, V.grad, lr, -0.5, 0.5)
            V.grad = None
        for p in self.params():
            if p.grad is not None:
                p.sub_(p.grad.sign_(), alpha=lr)       # p - lr * sign(grad): the product is exact either way
                p.grad = None
        if not fused:
            V.clamp_(-0.5, 0.5)
        self.a.clamp_(self.clip_min, 1.0)
        self.b.clamp_(self.clip_min, 1.0)

    def state(self):
        return [p.detach().clone() for p in self.params()]

    @torch.no_grad()
    def load(self, state) -> None:
        for p, v in zip(self.params(), state):
            p.copy_(v)

    @torch.no_grad()
    def commit(self) -> None:
        """Store the codes in the QuantLinear (drops its float weight)."""
        q, scale, zero = self.codes(ste=False)
        shape = (self.w.shape[0], -1)
        if self.spec.granularity == "tensor":
            scale, zero = scale.reshape(1, 1), zero.reshape(1, 1)
        else:
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        self.q.set_quantized_weight(q.reshape(self.w.shape).to(torch.int8), scale, zero)


class _ActClip:
    """The learned clip ratio of the linears that quantize one input alike (q, k, v; gate, up): a scalar c that
    their activation specs carry (as a float, so the quantizer is the inference one) and that gets LSQ's gradient."""

    def __init__(self, qs: list[QuantLinear], clip_min: float):
        self.qs, self.clip_min = qs, clip_min
        self.c = torch.tensor(float(qs[0].act_spec.clip_ratio), requires_grad=True)

    def params(self) -> list[torch.Tensor]:
        return [self.c]

    @property
    def value(self) -> float:
        return float(self.c.detach())

    def sync(self) -> None:
        value = self.value
        for q in self.qs:
            q.act_spec = replace(q.act_spec, clip_ratio=value)

    @torch.no_grad()
    def step(self, lr: float) -> None:
        if self.c.grad is not None:
            self.c.sub_(self.c.grad.sign_(), alpha=lr).clamp_(self.clip_min, 1.0)
            self.c.grad = None
            self.sync()

    def state(self):
        return [self.c.detach().clone()]

    @torch.no_grad()
    def load(self, state) -> None:
        self.c.copy_(state[0])
        self.sync()

    def commit(self) -> None:
        self.sync()

    def quantize(self, q: QuantLinear, x: torch.Tensor) -> torch.Tensor:
        """q's quantized input, with a gradient straight through to x and LSQ's to c."""
        with torch.no_grad():
            xq, scale, keep = q.quantize_input_parts(x)
            s = q.act_spec
            qmin, qmax = qrange(s.bits)
            r = rows(x, s.granularity, q.act_group_size).float()
            rq = rows(xq, s.granularity, q.act_group_size).float()
            # scale * d xq / d scale: rq - r inside the grid, the clamped end rq outside. As arithmetic, no bool tensors
            # (comparisons and masked writes are ~5x slower on a CPU): rc, r clamped to the grid's range, is r inside
            # and rq outside (that end exactly), so the whole of it is rq - rc + rq * [r != rc]
            rc = torch.clamp(r, qmin * scale, qmax * scale)
            g = (r - rc).abs_().sign_().add_(1).mul_(rq).sub_(rc).reshape(x.shape)
            if keep is not None:                    # preserved tokens: xq is x
                g.mul_(keep.logical_not().unsqueeze(-1))
            if q.preserve_channels is not None:     # kept apart (float, or INT8 on their own scale)
                g[..., q.preserve_channels] = 0
        return _LsqClip.apply(x, self.c, xq, g)


class _LsqClip(torch.autograd.Function):
    """xq's value; the gradient straight through to x, and to the clip ratio c: sum(grad * g) / c, where g = scale *
    d xq / d scale (scale proportional to c)."""

    @staticmethod
    def forward(ctx, x, c, xq, g):
        ctx.save_for_backward(g, c)
        return xq.view_as(xq)

    @staticmethod
    def backward(ctx, grad):
        g, c = ctx.saved_tensors
        gc = (grad.float() * g).sum() / c if ctx.needs_input_grad[1] else None
        return grad if ctx.needs_input_grad[0] else None, gc, None, None


def _same_input_quantizer(a: QuantLinear, b: QuantLinear) -> bool:
    """a and b quantize the same input to the same numbers (q, k and v; gate and up, unless the plan set them
    apart: per-linear clip ratios, preserved channels or static scales)."""
    def same(u, v):
        return u is v or (u is not None and v is not None and u.shape == v.shape and bool(torch.equal(u, v)))
    return (a.act_spec == b.act_spec and a.act_group_size == b.act_group_size and same(a.act_scale, b.act_scale)
            and same(a.act_zero, b.act_zero) and same(a.preserve_channels, b.preserve_channels)
            and a.preserve_channels_bits == b.preserve_channels_bits)


@contextmanager
def _mode(learners: list[_Learner], mode: str, clips: dict | None = None, shared: dict | None = None):
    """QuantLinears of the layer compute with: "float" (float weight, no activation quantizer, the target),
    "learned" (the learners' weights, recomputed each call as training changes them; activation quantizers
    straight-through) or "fixed" (the learners' current weights, computed once on entry: a pass over every window
    with no step in between; the weight's elementwise work costs about as much as a window's matmuls).

    The activation quantizer runs outside autograd (its value enters the graph straight-through only), once per
    input that linears share with the same quantizer (q, k, v; gate, up), and an output with no gradient is cast once
    to the autocast dtype when one is on: the same numbers as one quantizer (and one cast inside F.linear) per linear.

    clips: QuantLinear -> its _ActClip (learned mode): the quantized input carries d xq / d c as a gradient.
    shared: a dict that receives QuantLinear -> the linear whose quantized input it reused."""
    last: dict = {}                     # the last linear's input, its version, the linear and the input it got

    def quantized(q: QuantLinear, x: torch.Tensor) -> torch.Tensor:
        if last and last["x"] is x and last["version"] == x._version and _same_input_quantizer(last["q"], q):
            if shared is not None:
                shared[q] = last["q"]
            return last["out"]
        clip = clips.get(q) if clips and torch.is_grad_enabled() else None
        if clip is not None:
            xq = clip.quantize(q, x)
        else:
            with torch.no_grad():
                xq = q.quantize_input(x)
        if clip is None and torch.is_grad_enabled() and xq is not x:   # no activation quantizer: nothing to pass
            xq = x + (xq - x).detach()
        if torch.is_autocast_enabled(x.device.type) and not xq.requires_grad:    # F.linear would cast it for each
            xq = xq.to(torch.get_autocast_dtype(x.device.type))     # linear (with a gradient: summed in float32)
        last.update(x=x, version=x._version, q=q, out=xq)
        return xq

    def forward(lrn: _Learner):
        q = lrn.q
        fixed = lrn.weight(ste=False) if mode == "fixed" else None

        def fn(x):
            if mode == "float":
                return F.linear(x, q.weight.to(x.dtype), q.bias)
            xq = quantized(q, x)
            if fixed is not None:
                return F.linear(xq, fixed.to(x.dtype), q.bias)
            return F.linear(xq, lrn.weight(ste=torch.is_grad_enabled()).to(x.dtype), q.bias)
        return fn

    for lrn in learners:
        lrn.q.forward = forward(lrn)
    try:
        yield
    finally:
        last.clear()
        for lrn in learners:
            del lrn.q.forward


@torch.no_grad()
def _errors(layer, learners, inputs, targets, run, kind: str, shared: dict | None = None,
            until: float | None = None) -> tuple[list[float], list[torch.Tensor]]:
    """The objective summed on each window with the learners' current weights, and the layer's outputs; with
    `until`, stop after the window that takes the running sum above it."""
    sums, outs = [], []
    with _mode(learners, "fixed", shared=shared):
        for x, y in zip(inputs, targets):
            outs.append(run(layer, x))
            sums.append(float(output_loss(outs[-1], y, kind, "sum")))
            if until is not None and sum(sums) > until:     # a handful of windows: the sum is cheap
                break
    return sums, outs


def _units(y: torch.Tensor, kind: str) -> int:
    """What output_loss averages over: elements ("mse") or tokens ("token")."""
    return y.numel() if kind == "mse" else y[..., 0].numel()


def _act_clips(qlinears: list[QuantLinear], shared: dict, clip_min: float) -> list[_ActClip]:
    """One _ActClip per input the layer's learnable activation quantizers see (shared: who reused whose input)."""
    groups: dict = {}
    for q in qlinears:
        if act_clip_learnable(q.act_spec):
            groups.setdefault(shared.get(q, q), []).append(q)
    return [_ActClip(qs, clip_min) for qs in groups.values()]


class _Stop(Exception):
    pass


@contextmanager
def _cached_attention(layer, attention: nn.Module, inputs, run):
    """The attention module answers each window from a cache of its outputs, computed here once with its current
    weights (the layer's forward stops right after the attention). Yields use(idx): the windows of the next call."""
    outs: list = []           # the attention's hidden-state output per window
    rest: list = []           # what else it returned (attention weights, None), per window

    def hook(module, args, output):
        outs.append(output[0].detach() if isinstance(output, tuple) else output.detach())
        rest.append(output[1:] if isinstance(output, tuple) else None)
        raise _Stop

    handle = attention.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for x in inputs:
                try:
                    run(layer, x)
                except _Stop:
                    pass
    finally:
        handle.remove()
    cur: list[int] = []

    def forward(*args, **kwargs):
        out = torch.cat([outs[i] for i in cur]) if len(cur) > 1 else outs[cur[0]]
        return out if rest[0] is None else (out, *rest[0])

    attention.forward = forward
    try:
        yield lambda idx: cur.__setitem__(slice(None), idx)
    finally:
        del attention.forward


def learn_block(layer: nn.Module, qlinears: list[QuantLinear], inputs: list[torch.Tensor], run,
                cfg: LearnConfig | None = None, targets: list[torch.Tensor] | None = None,
                float_inputs: list[torch.Tensor] | None = None, index: int = 0, quiet: bool = True,
                outputs: list[torch.Tensor] | None = None,
                attention: nn.Module | None = None) -> tuple[BlockResult, list[torch.Tensor]]:
    """Learn the rounding and clipping of `qlinears` (QuantLinears of `layer`, not yet quantized) and store
    their codes.

    inputs:       the layer's inputs in the quantized model, one tensor [b, T, hidden] per calibration batch
    targets:      the float layer's outputs to match; default: the float layer on `float_inputs` (default
                  `inputs`)
    run(layer, x) -> the layer's hidden-state output (sysq.quant.gptq.run_layer with the captured kwargs)
    outputs:      a list to receive the quantized layer's outputs on `inputs` (the next layer's inputs), taken
                  from the error pass of the weights it keeps where they are the same numbers
    attention:    the layer's attention module (Adapter.attention), needed for cfg.attn_steps
    Returns the result and the float layer's outputs (the next layer's float inputs).
    """
    cfg = cfg or LearnConfig()
    t0 = time.perf_counter()
    learners = [_Learner(q, cfg.clip_min) for q in qlinears]
    if targets is None:
        with torch.no_grad(), _mode(learners, "float"):
            targets = [run(layer, x) for x in (float_inputs if float_inputs is not None else inputs)]
    if cfg.loss not in LOSSES:
        raise SysqError(f"LearnConfig.loss={cfg.loss!r}; allowed: {', '.join(LOSSES)}")
    shared: dict = {}
    # RTN on the first window (which also finds the inputs linears share); the rest after training, only as far as
    # needed to decide the guard exactly
    rtn_sums, rtn_out = _errors(layer, learners, inputs[:1], targets[:1], run, cfg.loss, shared)
    clips = _act_clips(qlinears, shared, cfg.clip_min) if cfg.act_clip else []
    trainable = learners + clips
    clip_of = {q: c for c in clips for q in c.qs}
    rtn_state = [t.state() for t in trainable]
    frozen = [p for p in layer.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + index)
    split = cfg.attn_steps is not None and cfg.attn_steps < cfg.steps
    if split and attention is None:
        raise SysqError("LearnConfig.attn_steps needs the layer's attention module (learn_block(attention=...))")
    in_attn = {id(m) for m in attention.modules()} if split else set()
    # (trainable, its steps): the attention's linears and clip ratios stop at attn_steps, their lr decaying over those
    budget = [(t, cfg.attn_steps if id(t.q if isinstance(t, _Learner) else t.qs[0]) in in_attn else cfg.steps)
              for t in trainable]
    order: list[int] = []
    # every window in each step: the step's loss is the whole objective, so the best step's state is kept
    # (AutoRound's best-iterate rule); with fewer windows per step the batch loss says more about the batch
    full = cfg.batch_size >= len(inputs) and not split
    best_loss, best = float("inf"), None
    try:
        with torch.enable_grad(), _mode(learners, "learned", clip_of), ExitStack() as stack:
            use = None
            for step in range(cfg.steps):
                if split and step == cfg.attn_steps:      # the attention is final: its outputs from now on
                    use = stack.enter_context(_cached_attention(layer, attention, inputs, run))
                if len(order) < cfg.batch_size:      # windows in a fresh seeded order, each once per pass
                    order += torch.randperm(len(inputs), generator=gen).tolist()
                idx, order = order[:cfg.batch_size], order[cfg.batch_size:]
                if use is not None:
                    use(idx)
                x = torch.cat([inputs[i] for i in idx])
                y = torch.cat([targets[i] for i in idx])
                with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
                    out = run(layer, x)
                loss = output_loss(out.to(y.dtype), y, cfg.loss)
                if full and step and float(loss.detach()) < best_loss:      # step 0 is RTN, measured below anyway
                    best_loss, best = float(loss.detach()), [t.state() for t in trainable]
                loss.backward()
                for t, steps in budget:
                    if step < steps:
                        first = cfg.lr if cfg.lr is not None else 1.0 / max(steps, 1)
                        t.step(first * (1 - step / steps))
    finally:
        for p in frozen:
            p.requires_grad_(True)
    learned_sums, out = _errors(layer, learners, inputs, targets, run, cfg.loss)
    if best is not None:
        last = [t.state() for t in trainable]
        for t, st in zip(trainable, best):
            t.load(st)
        best_sums, best_out = _errors(layer, learners, inputs, targets, run, cfg.loss)
        if sum(best_sums) < sum(learned_sums):
            learned_sums, out = best_sums, best_out
        else:
            for t, st in zip(trainable, last):
                t.load(st)
    # RTN's error on further windows until its running sum passes the learned weights' total over all windows: from
    # there the learned weights are better over all windows (every term is >= 0), so RTN's other windows need no pass
    last = [t.state() for t in trainable]
    for t, st in zip(trainable, rtn_state):
        t.load(st)
    more, more_out = _errors(layer, learners, inputs[1:], targets[1:], run, cfg.loss,
                             until=sum(learned_sums) - sum(rtn_sums))
    rtn_sums, rtn_out = rtn_sums + more, rtn_out + more_out
    kept = sum(learned_sums) < sum(rtn_sums)         # exact: RTN ran on every window, or its part already exceeds it
    if kept:
        for t, st in zip(trainable, last):
            t.load(st)
    else:
        out = rtn_out
    n = len(rtn_sums)
    units = sum(_units(y, cfg.loss) for y in targets[:n])
    rtn, learned = sum(rtn_sums) / units, sum(learned_sums[:n]) / units
    for t in trainable:
        t.commit()
    if outputs is not None:
        # the committed QuantLinears compute F.linear(quantize_input(x), dequantize(codes)): the pass above, bit
        # for bit, except INT8 W8A8's integer product (QuantLinear.integer_product), which runs again
        outputs[:] = out if not any(q.integer_product for q in qlinears) else [run(layer, x) for x in inputs]
    res = BlockResult(index, rtn, learned, kept, cfg.steps, time.perf_counter() - t0,
                      [c.value for c in clips], windows=n)
    log.info("learned rounding, layer %d (%d linears): %d steps, output error RTN %.4g -> learned %.4g (%.3fx)%s, "
             "%.1f s", index, len(qlinears), cfg.steps, rtn, learned, learned / rtn if rtn else 1.0,
             "" if kept else ": RTN kept", res.seconds)
    return res, targets


def bf16_native(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 in hardware: a CUDA GPU that supports it, a CPU with AVX512-BF16 or AMX. On
    other CPUs torch emulates bf16 (an AVX2 EPYC: a SmolLM2 layer's learned step ~13x slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, f, lambda: False)() for f in checks)
    return False


@torch.no_grad()
def learn_model(model: nn.Module, calib, cfg: LearnConfig | None = None, quiet: bool = False) -> LearnSummary:
    """Learned rounding for every not yet quantized QuantLinear with a weight quantizer, layer by layer.

    Each layer trains on the outputs of the already quantized layers before it (and matches the float model's);
    memory is bounded by five sets of one layer's activations over the calibration windows (inputs, float inputs,
    targets, the RTN and the learned error passes' outputs; six when each step takes every window)."""
    cfg = cfg or LearnConfig()
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    if cfg.amp == "bf16" and not bf16_native(device):     # emulated bf16 is slower than the model's dtype
        log.warning("learned rounding: %s has no native bf16 matmul (AVX512-BF16 / AMX on a CPU); the training steps "
                    "run in the model's dtype instead of under bf16 autocast", device)
        cfg = replace(cfg, amp=None)
    adapter = get_adapter(model)
    refs = adapter.linear_refs()
    inputs, kw = layer_inputs(model, calib)
    float_inputs = inputs

    def run(layer, x):
        return run_layer(layer, x, kw)

    summary = LearnSummary(config=cfg, windows=len(inputs), seqlen=inputs[0].shape[1] if inputs else 0)
    for i, layer in enumerate(tqdm(adapter.layers(), desc=f"learned rounding ({cfg.steps} steps/layer)",
                                   disable=quiet, leave=False)):
        qls = [r.module for r in refs if r.layer == i and isinstance(r.module, QuantLinear)
               and r.module.weight_spec is not None and not r.module.quantized]
        if not qls:
            float_inputs = inputs = [run(layer, x) for x in inputs]
            continue
        outputs: list[torch.Tensor] = []              # the quantized layer's outputs feed the next one
        res, float_outputs = learn_block(layer, qls, inputs, run, cfg, float_inputs=float_inputs, index=i,
                                         outputs=outputs,
                                         attention=adapter.attention(i) if cfg.attn_steps is not None else None)
        summary.layers.append(res)
        inputs, float_inputs = outputs, float_outputs
    summary.seconds = time.perf_counter() - t0
    log.info("%s", summary)
    return summary
