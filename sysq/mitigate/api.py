"""sysq.plan and sysq.mitigate: from the outlier report to a mitigated model, ready for sysq.quantize.

    report = sysq.detect(model, calib, tokenizer=tok)
    plan = sysq.plan(report, "w8a8-static")          # "auto", or "smooth+preserve-tokens", ...
    recipe = sysq.mitigate(model, plan, calib)        # in place; returns the recipe carrying the plan's
    sysq.quantize(model, recipe, calib)               # quantizer-side settings (preserved tokens/channels,
                                                      # per-linear activation clip ratios, GPTQ rounding)

The mitigated model also carries its plan, and sysq.quantize applies the plan's settings to whatever recipe
it is given: there is one quantize path, whichever recipe object the caller passes.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..arch import get_adapter
from ..errors import SysqError
from .calib import input_stats
from .clip import activation_ratio, clip_weights
from .plan import METHODS, Clip, MitigationPlan, PreserveChannels, PreserveTokens, Rotate, Smooth, TokenScales
from .preserve import apply_to_recipe, channels_from_report, channels_from_stats, token_rule
from .qsim import recipe_of
from .rotate import rotate
from .smooth import smooth

log = logging.getLogger(__name__)


# ---- planning ------------------------------------------------------------------------------------
TARGETS = ("sysq", "engine")


def plan(report=None, recipe="w8a8-static", method: str = "auto", target: str = "sysq") -> MitigationPlan:
    """A MitigationPlan for `recipe` from an OutlierReport (or None: defaults, BOS as the outlier token).

    method: "auto", "none", or methods joined by '+': smooth, smoothquant, clip, preserve-tokens,
    preserve-channels, rotate.
    target: "sysq" (anything sysq simulates and saves) or "engine" (only what a compressed-tensors export
    carries, so vLLM and plain transformers run it: see restrict_to_engine).
    """
    if target not in TARGETS:
        raise SysqError(f"target={target!r} is not known; use one of {', '.join(TARGETS)}")
    r = recipe_of(recipe)
    name = recipe if isinstance(recipe, str) else getattr(r, "name", "custom")
    p = MitigationPlan(recipe=name, method=method, target=target)
    if method == "none":
        return p
    _build(p, r, report, method)
    if target == "engine":
        restrict_to_engine(p)
    return p


def restrict_to_engine(p: MitigationPlan) -> MitigationPlan:
    """Drop what no inference engine runs from a plan, in place, saying so in its notes: the run-time
    preserved-token rule and the FP prefix (engines quantize every token), preserved channels (mixed precision
    inside one linear). Transforms that fold into weights (residual and per-head rotation, smoothing, weight and
    static-activation clipping, GPTQ) stay."""
    from ..quant.export import engine_online_rotation
    dropped = []
    if p.preserve_tokens is not None:
        p.preserve_tokens = None
        dropped.append("preserve-tokens (engines quantize every token)")
        r = recipe_of(p.recipe)
        if r is not None and r.act is not None and not r.act.dynamic and p.token_scales is None:
            p.token_scales = TokenScales()
            p.notes.append("token-scales: instead of preserving the outlier tokens, the linears they reach get "
                           "per-token dynamic scales (an engine runs both kinds); the rest stay static per tensor")
    if p.preserve_channels is not None:
        p.preserve_channels = None
        dropped.append("preserve-channels (mixed precision inside a linear)")
    if p.rotate is not None and p.rotate.down and not engine_online_rotation():
        p.rotate.down = False
        dropped.append("the online down_proj Hadamard (this compressed-tensors has no online transform)")
    p.target = "engine"
    if dropped:
        p.notes.append("target engine: dropped " + "; ".join(dropped))
    return p


def _build(p: MitigationPlan, r, report, method: str) -> None:
    parts = method.split("+")
    if "auto" in parts:
        parts = _auto(r, report, p) + [m for m in parts if m != "auto"]
    bad = [m for m in parts if m not in METHODS]
    if bad:
        raise SysqError(f"unknown mitigation method(s) {bad}; use auto, none or a '+'-join of {', '.join(METHODS)}")
    if "rotate" in parts:
        p.rotate = Rotate()
    if "smoothquant" in parts:
        p.smooth = Smooth(alpha=0.5, mappings="norm")
        p.notes.append("smoothquant: SmoothQuant's fixed alpha 0.5 on norm->q,k,v and norm->gate,up only")
    elif "smooth" in parts:
        p.smooth = Smooth()
    if "clip" in parts:
        static = r is not None and r.act is not None and not r.act.dynamic
        p.clip = Clip(weights=r is not None and r.weight is not None and r.weight.bits < 8, activations=static,
                      floor=_floors(report) if report is not None else {})
    if "preserve-tokens" in parts:
        p.preserve_tokens = _preserve_tokens(report)
    if "token-scales" in parts and r is not None and r.act is not None and not r.act.dynamic:
        p.token_scales = TokenScales()
    if "gptq" in parts and r is not None and r.weight is not None:
        p.rounding = "gptq"
        p.notes.append("gptq: error-compensating weight rounding (Frantar et al. 2022) on the mitigated weights")
    if "preserve-channels" in parts:
        # channels are named per linear: mitigate() fills them from the report (or calibration stats)
        p.preserve_channels = PreserveChannels(bits=8 if r is not None and r.weight is not None
                                               and r.weight.bits < 8 else None)


DEFAULT_THRESHOLD = 100.0   # Sun et al.'s massive-activation magnitude (DESIGN.md section 2), without a report


def _preserve_tokens(report) -> PreserveTokens:
    """BOS by position, every other token by the run-time rule: max |x| above the report's massive threshold
    (on SmolLM2 the first text token after BOS sometimes reaches |x| ~ 900 at down_proj: a position-0 rule
    alone misses it)."""
    if report is None:
        return PreserveTokens(threshold=DEFAULT_THRESHOLD, positions=[0])
    th = report.thresholds.get("massive_abs", DEFAULT_THRESHOLD)
    pos = report.tokens.get("positions", [])
    positions = [0] if not pos or pos[0]["pos"] == 0 else []
    toks = [t["token"] for t in report.outlier_tokens()[:8]]
    return PreserveTokens(threshold=float(th), positions=positions, tokens=toks)


def _floors(report) -> dict[str, float]:
    """Per linear input: the largest systematic-outlier magnitude (massive channels) the range must keep."""
    out = {}
    for name, s in report.linear_inputs.items():
        mags = [m["absmax"] for m in s.get("massive_channels", [])]
        if mags:
            out[name] = float(max(mags))
    return out


def _auto(r, report, p: MitigationPlan) -> list[str]:
    """The paper's findings as rules, checked against the SmolLM2 table (docs/MITIGATION.md):
    * outliers sit on a few tokens (BOS, some first/delimiter tokens) -> preserve tokens whenever
      activations are quantized;
    * channel outliers -> rotate when activations are quantized with 8-bit weights, or when activations go
      to 4 bits; not for INT4 weights at 8/16-bit activations (rotation made RTN INT4 weights worse on
      SmolLM2: w4a16 1.31 -> 1.78 x FP, w4a8 1.81 -> 3.47);
    * smoothing searched per mapping (identity allowed) always; after rotation it folds into norms and v->o;
    * INT4 weights: MSE clipping, without rotation the report's outlier input channels kept in INT8, and
      GPTQ rounding: at 4 bits the loss is weight rounding more than outliers (SmolLM2 w4a16 RTN 1.31 x FP with
      no activation quantizer at all), and error-compensating rounding recovers part of it."""
    parts = []
    acts = r is not None and r.act is not None
    w4 = r is not None and r.weight is not None and r.weight.bits < 8
    n_tok = len(report.outlier_tokens()) if report is not None else 1
    if acts and (r.act.bits <= 4 or not w4):
        parts.append("rotate")
        p.notes.append("rotate: activations are quantized and the report's outlier channels would set the scales "
                       "(QuaRot)" + ("; 4-bit activations" if r.act.bits <= 4 else ""))
    parts.append("smooth")
    p.notes.append("smooth: per-mapping strength searched on calibration output error (identity allowed)")
    if w4:
        parts.append("clip")
        p.notes.append("clip: 4-bit weights, MSE range search per group weighted by E[x^2]")
        if "rotate" not in parts:
            parts.append("preserve-channels")
            p.notes.append("preserve-channels: the report's massive / LLM.int8 input channels stay INT8 in INT4 layers")
        parts.append("gptq")
    if acts and n_tok:
        parts.append("preserve-tokens")
        p.notes.append(f"preserve-tokens: the report flags {n_tok} outlier token(s)"
                       + (f" (top: {report.outlier_tokens()[0]['token']!r})" if report is not None and n_tok else
                          " (no report: BOS assumed, threshold 100)"))
    return parts


# ---- applying ------------------------------------------------------------------------------------
@torch.no_grad()
def mitigate(model, plan_: MitigationPlan | str | Path, calib=None, quiet: bool = False, report=None):
    """Apply the plan to `model` in place: rotate -> smooth -> clip -> choose preserved channels.

    Returns the plan's recipe with its quantizer-side settings (or None when the plan names no recipe);
    the plan object records what was chosen (alphas, ratios, channels) for saving next to the model.
    """
    p = plan_ if isinstance(plan_, MitigationPlan) else MitigationPlan.load(plan_)
    r = recipe_of(p.recipe)
    if (p.smooth or p.clip) and calib is None:
        raise SysqError("this plan searches on calibration data (smooth / clip): pass calib, e.g. "
                        "sysq.calibration(tokenizer, n=32)")
    rule = token_rule(p.preserve_tokens) if r is not None and r.act is not None else None
    if p.token_scales is not None and not p.token_scales.linears:
        p.token_scales.linears = token_scale_linears(report, model)
    sim = apply_to_recipe(r, p) if r is not None else None       # what the searches simulate
    if p.rotate:
        rotate(model, p.rotate)
    if p.smooth:
        smooth(model, calib, p.smooth, sim if sim is not None else "w8a8-static", rule, quiet=quiet)
    refs = get_adapter(model).linear_refs()
    if p.clip or (p.preserve_channels is not None and not p.preserve_channels.channels):
        stats = input_stats(model, calib, {ref.name: ref.module for ref in refs}, rule, quiet=quiet)
        if p.clip and p.clip.weights and r is not None:
            p.clip.chosen.update({f"{k}.weight": v for k, v in
                                  clip_weights({ref.name: ref.module for ref in refs}, r, p.clip, stats).items()})
        if p.clip and p.clip.activations and r is not None:
            for ref in refs:
                ratio = activation_ratio(stats[ref.name], ref.module.weight, r, p.clip.activation_ratios,
                                         p.clip.floor.get(ref.name, 0.0) if rule is None else 0.0, rule is not None)
                p.clip.chosen[f"{ref.name}.act"] = ratio
        if p.preserve_channels is not None and not p.preserve_channels.channels:
            chans = channels_from_report(report, model, p.preserve_channels.per_linear) if report is not None \
                else channels_from_stats({k: s.absmax for k, s in stats.items()}, p.preserve_channels.per_linear)
            p.preserve_channels.channels = chans
    object.__setattr__(model, "_sysq_plan", p)
    return apply_to_recipe(r, p) if r is not None else None


def token_scale_linears(report, model) -> list[str]:
    """The decoder linears whose inputs carry the report's outlier tokens (massive, or token max over 64x the median
    token max: Sun et al., PrefixQuant); without a report, the MLP output linears, where the paper finds them."""
    refs = get_adapter(model).linear_refs()
    if report is None:
        return [ref.name for ref in refs if ref.role in ("down", "fc2")]
    out = []
    for ref in refs:
        try:
            s = report.linear_input_stats(ref.name)
        except SysqError:
            continue
        if s.get("outlier_tokens") or s.get("massive_channels"):
            out.append(ref.name)
    return out
