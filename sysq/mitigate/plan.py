"""MitigationPlan: what is smoothed, clipped, preserved and rotated, as a readable, hand-editable dataclass.

A plan is data, not code: it serialises to YAML (saved next to a quantized model) and loads back
unchanged, so a user can read what sysq did and edit it. ``plan(report, recipe)`` builds one from an
:class:`OutlierReport` (the detector's findings) and the target recipe; ``plan(report, recipe, "auto")``
chooses the methods by measuring candidate plans when ``sysq.mitigate`` runs (``Search``), "auto-fast" by
rules; the other presets name one method or a '+'-joined combination:

    none | smooth | smoothquant | awq | clip | preserve-tokens | preserve-channels | rotate | gptq | learned
    | keep-float | auto | auto-fast
    e.g. "smooth+preserve-tokens", "rotate+preserve-tokens", "auto+gptq", "awq+learned", "auto+learned"

Each choice records *why* in ``plan.notes`` (which report finding drove it).
Order of application in :func:`sysq.mitigate`: rotate -> smooth -> clip -> preserve.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from ..errors import SysqError

log = logging.getLogger(__name__)

PLAN_VERSION = 1
METHODS = ("smooth", "smoothquant", "awq", "clip", "preserve-tokens", "preserve-channels", "rotate", "rotate-keys",
           "gptq", "learned", "token-scales", "keep-float")
ALPHA_GRID = [round(0.05 * i, 2) for i in range(1, 20)]          # 0.05 .. 0.95 (plus the identity)


@dataclass
class Smooth:
    """Per-channel scales folded into the source of each mapping: statistic "max", SmoothQuant's migration
    s = max|X|^a / max|W|^(1-a); statistic "mean", AWQ's activation-aware s = mean|X|^a (Lin et al. 2023)."""

    alpha: float | None = None               # fixed strength; None: search per mapping by output error
    statistic: str = "max"                   # "max" (SmoothQuant) | "mean" (AWQ)
    alphas: list[float] = field(default_factory=lambda: list(ALPHA_GRID))   # search grid
    mappings: str = "all"                    # "norm": norm->qkv/gate/up only (SmoothQuant); "all": + v->o, up->down
    layers: list[int] | None = None          # None: every layer
    chosen: dict[str, float] = field(default_factory=dict)   # mapping name -> alpha used (filled by mitigate)


@dataclass
class Clip:
    """Weight clipping by MSE search (AWQ/OmniQuant) and activation clip ratios for static scales."""

    weights: bool = True
    weight_ratios: list[float] = field(default_factory=lambda: [1.0 - 0.025 * i for i in range(13)])  # 1.0 .. 0.7
    activations: bool = False
    activation_ratios: list[float] = field(default_factory=lambda: [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    # A static activation range never drops below these magnitudes (the report's systematic outliers
    # feeding that linear, unless their tokens are preserved): they are functional, not noise.
    floor: dict[str, float] = field(default_factory=dict)
    chosen: dict[str, float] = field(default_factory=dict)   # "<linear>.act" -> ratio (filled by mitigate)


@dataclass
class PreserveChannels:
    """A few input channels per linear kept in higher precision (LLM.int8 / QuIK / Atom, but static)."""

    channels: dict[str, list[int]] = field(default_factory=dict)   # linear name -> input channel indices
    per_linear: int = 8                      # how many the planner picks per linear
    bits: int | None = None                  # None: float; 8: INT8 inside an INT4 layer


@dataclass
class PreserveTokens:
    """Outlier tokens kept out of the activation quantizer's scale and passed through in float.

    Run-time rule: a token whose |x| max over channels at a linear's input exceeds `threshold` (absolute,
    set from the report's systematic-outlier magnitudes) stays in float. `positions` are always preserved
    (0 = the BOS / first token). Prefix form (PrefixQuant / IntactKV): the key/value cache of the first `prefix` tokens comes
    from the full-precision model and the quantized model runs on the rest.
    """

    threshold: float | None = None           # absolute |x| over which a token stays float (None: positions only)
    positions: list[int] = field(default_factory=lambda: [0])
    prefix: int = 0
    tokens: list[str] = field(default_factory=list)   # the report's outlier tokens (for the reader)


@dataclass
class TokenScales:
    """Per-token dynamic activation scales on the linears where the outlier tokens land (every MLP output linear,
    plus any other input the report flags), static per-tensor scales everywhere else: the engine form of
    preserve-tokens (every engine runs per-token dynamic int8; none keeps chosen tokens in float). The outlier
    token then sets only its own scale."""

    linears: list[str] = field(default_factory=list)     # filled by mitigate() from the report


@dataclass
class Rotate:
    """QuaRot-style rotation: residual stream (Hadamard, Kronecker with a small block when needed),
    down_proj input (online Hadamard) and per-head v->o."""

    residual: bool = True
    down: bool = True
    heads: bool = True
    seed: int = 0                            # for the random orthogonal block when no Hadamard exists


@dataclass
class Learned:
    """The weight rounding auto gives INT4 weights: learned rounding and clipping with this budget, loss and grid
    (set on the recipe by apply_to_recipe unless the recipe names its own learned budget, e.g. +learned200x8).
    `learned_budget` picks it by the activations' bits, each as measured best (docs/INT4.md). With weight-only or
    8-bit activations it runs alone, no transforms: with learned rounding the rules' smooth + clip + preserved
    channels made SmolLM2 worse (one H200, 32 calibration windows, 100 x 1 steps, per-token loss: w4a16 1.079 / 1.071
    x FP with them, 1.059 / 1.049 without; docs/INT4.md, call I6), while measured auto's RTN proxy ranks them first
    (it scores round-to-nearest weights, which they do help), so this is the rules' choice, not a measured one."""

    steps: int = 100                         # SignSGD steps per decoder layer
    batch_size: int = 1                      # calibration windows per step
    loss: str = "token"                      # each token's error relative to its norm (+tokenloss)
    zero_point: str = "float"                # asymmetric weights; "int" under target engine (compressed-tensors)
    group_size: int = 64                     # weight groups (or per-channel rows) wider than this are narrowed to it
    amp: str | None = None                   # "bf16": the training steps under bf16 autocast (+amp; learn.py)
    act_clip: bool = False                   # learn the dynamic activation quantizers' clip ratios too (+actclip)
    lr: float | None = None                  # SignSGD's first step; None: 1 / steps (AutoRound's)
    attn_steps: int | None = None            # the attention's linears train in the first N steps only; None: all
    device: str | None = None                # the device type mitigate fitted this budget to; None: not yet


def learned_budget(r, device=None) -> Learned:
    """auto's learned step for a recipe with INT4 weights, by its activations (SmolLM2, one H200, 32 calibration
    windows, held-out WikiText-2 windows 0-39 / 40-79; docs/INT4.md):
    * none: 200 x 1 steps under bf16 autocast, per-token loss, float zero points, g64, no transforms (this CPU:
      1.060 / 1.047 and 1.058 / 1.045 x FP for seeds 0 and 1 in 349-377 s; 100 x 1 in float32, the default before,
      1.066 / 1.043 in 322 s; 200 x 1 in float32 on one H200 1.048 / 1.043, call I6);
    * 8-bit: 100 x 1 steps in the model's dtype, otherwise the same (w4a8 1.078 / 1.072, call I7, against 1.092 /
      1.096 with the rules' plan);
    * 4-bit: the rules' plan (rotation, smoothing, clipping, preserved tokens, rotated keys) with AutoRound's budget,
      200 steps x 8 windows, the output MSE, integer zero points, g32 (w4a4 with KV4 in groups of 32: 1.469 / 1.431,
      call J7, 1.443 / 1.405 with the keys rotated, call C20; with g64 1.525 / 1.476, per-token loss 1.540 / 1.458).
      On a CPU (`device`, where the step runs) a sixth of those window-steps, 125 x 2 under bf16 autocast with float
      zero points and learned activation clip ratios: 1.453-1.460 / 1.399-1.432 over seeds 0-3 with the keys
      rotated (call C20; 100 x 2 reached 1.470, 50 x 2 1.513), 452-480 s on a 2-core AVX512 CPU (eighteenth
      session), where 200 x 8 would take over half an hour.
    Where `device` multiplies bf16 only by emulation (an AVX2 CPU) the steps run in float32, and the budget says so
    (amp None), so that the plan and the recipe line describe what runs. There weight-only INT4 trains the attention's
    linears in the first 100 of the 200 steps and the MLP's on the cached attention output after that (attn_steps
    100: three quarters of 200 x 1's cost, 1.0469 / 1.0572 in 582 s on a 2-core AVX2 CPU at seed 0; on one H200 in
    float32 over seeds 0-13 a mean of 1.0593 / 1.0501 against 200 x 1's 1.0575 / 1.0526, twenty-third session,
    calls C26-C28). w4a4's budget there is 60 x 2 with a first
    step of 0.01 (not 1 / 60), which fits 10 minutes on a 2-core AVX2 CPU: 1.4848 / 1.4420 in 495 s at seed 1 there
    (twenty-second session; 1.5178 in 592 s with lr 1 / 60), and 1.4545-1.4885 over seeds 0-4 on one H200 in float32
    (calls C23, C24)."""
    kind = None if device is None else getattr(device, "type", str(device).split(":")[0])
    amp = "bf16" if kind is None or _bf16_native(device) else None
    if r is not None and r.act is not None and r.act.bits <= 4:
        if kind == "cpu" and amp is None:
            return Learned(steps=60, batch_size=2, loss="mse", zero_point="float", group_size=32, act_clip=True,
                           lr=0.01, device=kind)
        if kind == "cpu":
            return Learned(steps=125, batch_size=2, loss="mse", zero_point="float", group_size=32, amp=amp,
                           act_clip=True, device=kind)
        return Learned(steps=200, batch_size=8, loss="mse", zero_point="int", group_size=32, device=kind)
    if r is not None and r.act is not None:
        return Learned(device=kind)
    if kind == "cpu" and amp is None:
        return Learned(steps=200, attn_steps=100, device=kind)
    return Learned(steps=200, amp=amp, device=kind)


def _bf16_native(device) -> bool:
    import torch

    from ..quant import learn
    return learn.bf16_native(device if isinstance(device, torch.device) else torch.device(str(device)))


@dataclass
class KeepFloat:
    """The few linears that cost the most when quantized stay in float (an engine runs them unquantized:
    compressed-tensors' `ignore` list). mitigate() measures each linear quantized alone with the recipe (the rest
    float) by the KL of the output distribution from the float model's on the last `windows` calibration windows,
    and keeps the `count` costliest; name `linears` to skip the measurement."""

    count: int = 8
    windows: int = 1
    linears: list[str] = field(default_factory=list)             # filled by mitigate() when empty
    scores: dict[str, float] = field(default_factory=dict)      # linear -> KL quantized alone (nats/token)
    share: float | None = None                                   # of the decoder linears' weights kept float


@dataclass
class Search:
    """auto's measured choice: candidate plans (method strings), each applied to a copy of the model with the
    calibration windows but the last `score_windows` (the fit windows), quantized with the first `quant_windows` of
    them, and scored by the KL divergence of its output distribution from the float model's on the last
    `score_windows` (nats per token), which no fitted step of any candidate saw (`split`, as [start, stop) window
    ranges: a score on the windows a candidate was fitted to rewards fitting them, not the plan).

    INT4 weights are rounded to nearest while scoring (`proxy_rounding` "rtn"): the winner gets its GPTQ / learned
    rounding when quantized, and GPTQ inside the search made it 10-25x slower than the rules and ranked the
    candidates by GPTQ's own noise. FP8 weights are scored with the rounding they get ("recipe"): there GPTQ
    removes most of the loss, and the candidates differ by what they do with it. The rules' plan is kept unless a candidate's KL is lower by more than `z`
    standard errors of the paired per-segment difference (`segment` tokens each, over the score windows; 16 segments
    by default): the proxy's noise, written in `noise` and the plan's notes. A challenger that wins with RTN weights
    is scored again, with the rules, under the recipe's own rounding, and must win there too. The rules' plan is
    scored first and the others window by window: one already worse than it by `z` standard errors stops there
    (`stopped`; its score is the mean over the windows it got)."""

    candidates: list[str] = field(default_factory=list)
    quant_windows: int = 2                   # 2 and 2 of SmolLM2's 512-token windows: its candidates' KLs differ 3-100x,
    score_windows: int = 2                   # and each window costs every candidate a forward pass (CPU: ~half the search)
    proxy: str = "kl"
    proxy_rounding: str = "rtn"              # "rtn" | "recipe" (score with the candidate's own rounding)
    grid_step: int = 2                       # candidates search every grid_step-th smoothing alpha / clip ratio
    segment: int | None = None               # tokens per unit of the paired noise estimate (None: 16 units)
    z: float = 2.0                           # a candidate replaces the rules only when better by z standard errors
    scores: dict[str, float] = field(default_factory=dict)     # candidate -> mean KL (filled by mitigate)
    noise: dict[str, float] = field(default_factory=dict)      # candidate -> std. error of its KL minus the rules'
    seconds: dict[str, float] = field(default_factory=dict)    # candidate -> seconds to mitigate, quantize, score
    stopped: dict[str, int] = field(default_factory=dict)      # candidate -> score windows it got before it was
                                                               # clearly worse than the rules (z standard errors)
    split: dict[str, list[int]] = field(default_factory=dict)  # "fit" / "quantize" / "score" -> [start, stop)
    chosen: str | None = None                                  # None: not measured yet
    rules: str | None = None                                   # the candidate auto-fast would take
    total_seconds: float = 0.0


@dataclass
class MitigationPlan:
    recipe: str | None = None
    method: str = "none"
    smooth: Smooth | None = None
    clip: Clip | None = None
    preserve_channels: PreserveChannels | None = None
    preserve_tokens: PreserveTokens | None = None
    rotate: Rotate | None = None
    rotate_keys: bool = False                # the quantized KV cache holds keys in a Hadamard basis (QuaRot's R3)
    token_scales: TokenScales | None = None
    keep_float: KeepFloat | None = None
    rounding: str | None = None              # the recipe's weight rounding: "gptq" (error-compensating) or
                                             # "learned" (sysq/quant/learn.py); None: the recipe's own
    learned: Learned | None = None           # auto for INT4 weights: the learned step's budget and grid
    target: str = "sysq"                     # "engine": only what a compressed-tensors export carries
    search: Search | None = None             # auto: the candidates measured and the choice
    notes: list[str] = field(default_factory=list)
    version: int = PLAN_VERSION

    def __str__(self) -> str:
        """What the plan does, and once sysq.mitigate ran, what it chose (alphas, ratios, channels)."""
        parts = [f"MitigationPlan({self.method}, recipe={self.recipe}"
                 + (f", target={self.target})" if self.target != "sysq" else ")")]
        if self.rotate:
            r = self.rotate
            parts.append(f"  rotate: residual={r.residual} heads={r.heads} down (online Hadamard)={r.down}")
        if self.rotate_keys:
            parts.append("  rotate keys: the KV cache holds keys in a Hadamard basis (QuaRot's R3)")
        if self.smooth:
            a = "searched per mapping" if self.smooth.alpha is None else self.smooth.alpha
            c = list(self.smooth.chosen.values())
            done = f"; {len(c)} mappings smoothed (alpha {min(c):.2f}..{max(c):.2f})" if c else ""
            parts.append(f"  smooth: alpha {a}, mappings={self.smooth.mappings}{done}")
        if self.clip:
            w = {k: v for k, v in self.clip.chosen.items() if k.endswith(".weight")}
            a = {k: v for k, v in self.clip.chosen.items() if k.endswith(".act")}
            done = ""
            if w:
                done += f"; weights: mean ratio {sum(w.values()) / len(w):.3f} over {len(w)} linears"
            if a:
                done += f"; activations: {sum(v < 1 for v in a.values())} of {len(a)} linears clipped"
            parts.append(f"  clip: weights={self.clip.weights} activations={self.clip.activations}{done}")
        if self.preserve_channels:
            n = sum(len(v) for v in self.preserve_channels.channels.values())
            bits = "float" if self.preserve_channels.bits is None else f"INT{self.preserve_channels.bits}"
            parts.append(f"  preserve channels: {n} input channels over {len(self.preserve_channels.channels)} "
                         f"linears kept in {bits}")
        if self.token_scales:
            n = self.token_scales.linears
            parts.append("  token scales: dynamic per-token activations on " + (
                f"{len(n)} linears ({', '.join(x.removeprefix('model.') for x in n[:3])}{', ...' if len(n) > 3 else ''})"
                if n else "the linears the report's outlier tokens reach"))
        if self.keep_float:
            k = self.keep_float
            parts.append(f"  keep float: {len(k.linears)} linears" + (
                f" ({k.share:.2%} of the weights): {', '.join(x.removeprefix('model.') for x in k.linears)}"
                if k.linears and k.share is not None else f" (the {k.count} costliest, measured when mitigating)"))
        if self.rounding:
            lw = self.learned
            parts.append(f"  weight rounding: {self.rounding}" + (
                f" ({lw.steps} steps/layer"
                f"{f' ({lw.attn_steps} for the attention)' if lw.attn_steps is not None else ''}"
                f" x {lw.batch_size} window, loss {lw.loss}, {lw.zero_point} zero points, "
                f"groups of at most {lw.group_size}{', bf16 autocast' if lw.amp else ''}"
                f"{', activation clip learned' if lw.act_clip else ''}"
                f"{f', fitted to {lw.device}' if lw.device else ''}, unless the recipe names its "
                f"own)" if lw else ""))
        if self.search:
            sc = self.search
            if sc.chosen is None:
                parts.append(f"  auto: {len(sc.candidates)} candidates to measure when mitigating: "
                             + ", ".join(sc.candidates) + f" (cost: each one mitigate, one "
                             f"{'RTN-weight ' if sc.proxy_rounding == 'rtn' else ''}quantize on {sc.quant_windows} "
                             f"calibration windows and a pass over {sc.score_windows})")
            else:
                parts.append(f"  auto: chose {sc.chosen!r} of {len(sc.candidates)} candidates by {sc.proxy} on "
                             f"{sc.score_windows} calibration windows ({sc.total_seconds:.1f}s)"
                             + (" (the rules)" if sc.chosen == sc.rules else ""))
        if self.preserve_tokens:
            p = self.preserve_tokens
            parts.append(f"  preserve tokens: positions {p.positions}, threshold {p.threshold}, prefix {p.prefix}"
                         + (f" (report's outlier tokens: {', '.join(map(repr, p.tokens[:4]))})" if p.tokens else ""))
        parts += [f"  - {n}" for n in self.notes]
        return "\n".join(parts)

    # ---- YAML ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MitigationPlan":
        if not isinstance(d, dict):
            raise SysqError(f"a mitigation plan must be a mapping, got {type(d).__name__}")
        _check_keys(cls, d, "plan")
        kw = dict(d)
        for name, sub in _SECTIONS.items():
            if kw.get(name) is not None:
                if not isinstance(kw[name], dict):
                    raise SysqError(f"plan field {name!r} must be a mapping or null, got {kw[name]!r}")
                _check_keys(sub, kw[name], name)
                kw[name] = sub(**kw[name])
        if kw.get("version", PLAN_VERSION) > PLAN_VERSION:
            raise SysqError(f"plan version {kw['version']} is newer than this sysq understands ({PLAN_VERSION}); "
                            "upgrade sysq")
        return cls(**kw)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=110)

    @classmethod
    def from_yaml(cls, text: str) -> "MitigationPlan":
        try:
            return cls.from_dict(yaml.safe_load(text))
        except yaml.YAMLError as e:
            raise SysqError(f"the plan is not valid YAML: {e}") from e

    def save(self, path) -> Path:
        """Write the plan as YAML atomically (a folder gets `mitigation.yaml`)."""
        path = Path(path)
        if path.is_dir():
            path = path / "mitigation.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".plan-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            f.write(self.to_yaml())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path) -> "MitigationPlan":
        path = Path(path)
        if path.is_dir():
            path = path / "mitigation.yaml"
        if not path.is_file():
            raise SysqError(f"no mitigation plan at {path}; write one with MitigationPlan.save or `sysq.plan`")
        return cls.from_yaml(path.read_text())


_SECTIONS = {"smooth": Smooth, "clip": Clip, "preserve_channels": PreserveChannels,
             "preserve_tokens": PreserveTokens, "rotate": Rotate, "token_scales": TokenScales, "search": Search,
             "keep_float": KeepFloat, "learned": Learned}


def _check_keys(cls, d: dict, where: str) -> None:
    allowed = {f.name for f in fields(cls)}
    unknown = set(d) - allowed
    if unknown:
        raise SysqError(f"unknown field(s) {', '.join(sorted(unknown))} in {where}; allowed: {', '.join(sorted(allowed))}")
