"""sysq.plan and sysq.mitigate: from the outlier report to a mitigated model, ready for sysq.quantize.

    report = sysq.detect(model, calib, tokenizer=tok)
    plan = sysq.plan(report, "w8a8-static")          # "auto" (measured), "auto-fast" (rules), "smooth+clip", ...
    recipe = sysq.mitigate(model, plan, calib)        # in place; returns the recipe carrying the plan's
    sysq.quantize(model, recipe, calib)               # quantizer-side settings (preserved tokens/channels,
                                                      # per-linear activation clip ratios, GPTQ rounding)

The mitigated model also carries its plan, and sysq.quantize applies the plan's settings to whatever recipe
it is given: there is one quantize path, whichever recipe object the caller passes.

`auto` chooses by measurement. plan() proposes candidate plans (AUTO_CANDIDATES: the rules' plan, the rules with
the rotation decision reversed, no mitigation); mitigate() narrows each to what the model's family keeps exact
(Adapter.rotations) and to the target, applies each to a copy of the model with the calibration windows but the
last few, quantizes it, and keeps the one whose next-token distribution is closest to the float model's on those
last windows, held out of every fitted step (`split`); then it applies the winner with every calibration window.
`auto-fast` is the rules alone.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..arch import get_adapter
from ..errors import SysqError
from ..sequential import choose_pipeline
from .calib import input_stats
from .clip import activation_ratio, clip_weights
from .keep import linear_costs, weight_share
from .plan import (METHODS, Clip, KeepFloat, MitigationPlan, PreserveChannels, PreserveTokens, Rotate, Search, Smooth,
                   TokenScales, learned_budget)
from .preserve import apply_to_recipe, channels_from_report, channels_from_stats, token_rule
from .qsim import recipe_of
from .rotate import fit_rotation, rotate
from .smooth import smooth

log = logging.getLogger(__name__)


# ---- planning ------------------------------------------------------------------------------------
TARGETS = ("sysq", "engine")


def plan(report=None, recipe="w8a8-static", method: str = "auto", target: str = "sysq") -> MitigationPlan:
    """A MitigationPlan for `recipe` from an OutlierReport (or None: defaults, BOS as the outlier token).

    method: "auto" (chosen by measurement when sysq.mitigate runs: see Search), "auto-fast" (the rules alone),
    "none", or methods joined by '+': smooth, smoothquant, awq, clip, preserve-tokens, preserve-channels, rotate,
    gptq, learned ("learned" replaces auto's gptq rounding: "auto+learned").
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
    object.__setattr__(p, "_report", report)     # the candidates of a measured auto are planned from it too
    return p


def fast_method(method: str) -> str:
    """`method` with measured auto replaced by its rules (the CLI's --fast)."""
    return "+".join("auto-fast" if m == "auto" else m for m in method.split("+"))


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
    if p.learned is not None and p.learned.zero_point == "float":
        p.learned.zero_point = "int"
        dropped.append("float zero points of the learned INT4 weights (compressed-tensors has integer ones)")
    if p.rotate is not None and p.rotate.down and not engine_online_rotation():
        p.rotate.down = False
        dropped.append("the online down_proj Hadamard (this compressed-tensors has no online transform)")
    p.target = "engine"
    if dropped:
        p.notes.append("target engine: dropped " + "; ".join(dropped))
    return p


AUTO = ("auto", "auto-fast")


def _build(p: MitigationPlan, r, report, method: str) -> None:
    parts = method.split("+")
    extra = [m for m in parts if m not in AUTO]
    auto = "auto" in parts or "auto-fast" in parts
    if auto and _learned_alone(r, extra):
        parts = ["learned"] + extra              # INT4 weights, A16 / A8: nothing to measure (plan.Learned says why)
        if "rotate-keys" not in parts:
            parts += _rotate_keys(r, p)
        if r.method != "learned":
            p.learned = learned_budget(r)
        p.notes.append("learned: INT4 weights, learned rounding and clipping alone (no smoothing, clipping "
                       "search or preserved channels: with learned rounding they made SmolLM2 worse, 1.079x against "
                       "1.059x FP; measured auto's RTN-weight proxy cannot see that, so it is not searched)")
    elif auto:
        if _learned_in_plan(r, extra):           # INT4 weights, A4: the rules' plan, then learned rounding, not GPTQ
            extra = extra + ["learned"]
            if r.method != "learned":
                p.learned = learned_budget(r)
        parts = _rules(r, report, p) + extra     # auto: the rules' plan until mitigate measures the candidates
        if "auto" in method.split("+"):
            rules = "+".join(_rules(r, report, MitigationPlan()) + extra)
            # FP8: GPTQ takes two thirds of the loss, so a GPTQ candidate scored with RTN weights is ranked by an
            # error it will not have (docs/FP8_ACCURACY.md)
            fp8 = _WHEN["fp8"](r)
            p.search = Search(candidates=candidates(r, report, extra), rules=rules,
                              proxy_rounding="recipe" if fp8 else "rtn")
    bad = [m for m in parts if m not in METHODS]
    if bad:
        raise SysqError(f"unknown mitigation method(s) {bad}; use auto, auto-fast, none or a '+'-join of "
                        f"{', '.join(METHODS)}")
    if "rotate" in parts:
        p.rotate = Rotate()
    if "rotate-keys" in parts:
        if r is None or r.kv is None:
            raise SysqError(f"rotate-keys rotates the keys of a quantized KV cache, and recipe {p.recipe!r} keeps "
                            "the cache in float: add +kv4 (or +kv8) to the recipe, or leave rotate-keys out")
        p.rotate_keys = True
    if "smoothquant" in parts:
        p.smooth = Smooth(alpha=0.5, mappings="norm")
        p.notes.append("smoothquant: SmoothQuant's fixed alpha 0.5 on norm->q,k,v and norm->gate,up only")
    elif "awq" in parts:
        p.smooth = Smooth(statistic="mean")
        p.notes.append("awq: activation-aware per-channel scales mean|X|^a (AWQ), strength searched per mapping on "
                       "the recipe's output error (identity allowed), with weight clipping")
        if "clip" not in parts:
            parts.append("clip")
    elif "smooth" in parts:
        p.smooth = Smooth()
    if "clip" in parts:
        static = r is not None and r.act is not None and not r.act.dynamic
        a4 = r is not None and r.act is not None and r.act.dynamic and r.act.bits <= 4    # per-linear dynamic ratios
        p.clip = Clip(weights=r is not None and r.weight is not None and r.weight.bits < 8, activations=static or a4,
                      floor=_floors(report) if report is not None else {})
    if "preserve-tokens" in parts:
        p.preserve_tokens = _preserve_tokens(report)
    if "token-scales" in parts and r is not None and r.act is not None and not r.act.dynamic:
        p.token_scales = TokenScales()
    if "keep-float" in parts and r is not None and r.weight is not None:
        p.keep_float = KeepFloat()
        p.notes.append(f"keep-float: the {p.keep_float.count} linears that cost the most quantized alone (KL to the "
                       "float model, measured when mitigating) stay in float")
    if "learned" in parts and r is not None and r.weight is not None:
        p.rounding = "learned"
        p.notes.append("learned: rounding and clipping learned per decoder layer against its float output on the "
                       "calibration windows (AutoRound's SignSGD)" + (", instead of gptq" if "gptq" in parts else ""))
    elif "gptq" in parts and r is not None and r.weight is not None:
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


def _weights4(r) -> bool:
    return r is not None and r.weight is not None and r.weight.bits < 8


def _kv4(r) -> bool:
    return r is not None and r.kv is not None and r.kv.bits <= 4


def _rotate_keys(r, p: MitigationPlan) -> list[str]:
    """auto's rule for the KV cache: rotate the keys of a 4-bit one, with the note saying why."""
    if not _kv4(r):
        return []
    p.notes.append("rotate-keys: a 4-bit KV cache holds the keys in a Hadamard basis (QuaRot's R3), which spreads "
                   "their outlier channels (SmolLM2, float weights, KV4 per token: 1.111 -> 1.059x FP; w4a4+kv4 "
                   "learned: 1.469 -> 1.443x)")
    return ["rotate-keys"]


def _learned_alone(r, extra: list[str]) -> bool:
    """auto for INT4 weights with 16- or 8-bit activations (w4a16, w4a8) is learned rounding with no transforms
    (plan.learned_budget), unless GPTQ or other methods are asked for by name (recipe +gptq, auto+gptq, auto+smooth)."""
    return (_weights4(r) and (r.act is None or r.act.bits >= 8) and r.method != "gptq"
            and not set(extra) - {"learned", "rotate-keys"})


def _learned_in_plan(r, extra: list[str]) -> bool:
    """auto for INT4 weights with 4-bit activations (w4a4) is the rules' plan with learned rounding in place of GPTQ
    (w4a4+kv4 on SmolLM2: 3.18x FP per channel with GPTQ, 2.09x in groups of 64 with 50 learned steps, 1.47x with
    plan.learned_budget's; docs/INT4.md), unless a rounding is named."""
    return _weights4(r) and r.act is not None and r.method != "gptq" and not {"gptq", "learned"} & set(extra)


def _rules(r, report, p: MitigationPlan, rotate: bool | None = None) -> list[str]:
    """auto-fast: the report's findings as rules (`rotate` forces the rotation decision either way).
    * the outliers sit on a few tokens (the report's outlier tokens: BOS, delimiters) -> preserve those tokens
      whenever activations are quantized (they would set every static range, and they are functional);
    * they sit in a few channels that the report traces to a few down_proj columns -> rotate (spread them over
      every channel) when activations are quantized, unless the weights go to 4 bits while the activations stay
      at 8 or 16: then the weight grid, not the activation range, is the loss, and spreading the outlier columns
      over every input puts their magnitude into every INT4 group (on SmolLM2: w4a16 RTN 1.31 -> 1.78 x FP);
    * the rest of each channel's range moves into the weights where that lowers the simulated output error
      (smooth, searched per mapping, identity allowed);
    * INT4 weights: MSE clipping, the report's outlier input channels kept in INT8 when not rotated, GPTQ rounding."""
    parts = []
    acts = r is not None and r.act is not None
    w4 = _weights4(r)
    n_tok = len(report.outlier_tokens()) if report is not None else 1
    rot = (acts and (r.act.bits <= 4 or not w4)) if rotate is None else rotate
    if rot:
        parts.append("rotate")
        p.notes.append("rotate: the report's outlier channels would set the activation scales; spread them (QuaRot)"
                       + ("; 4-bit activations" if acts and r.act.bits <= 4 else ""))
    parts.append("smooth")
    p.notes.append("smooth: per-mapping strength searched on calibration output error (identity allowed)")
    if w4:
        parts.append("clip")
        p.notes.append("clip: 4-bit weights, MSE range search per group weighted by E[x^2]")
        if not rot:
            parts.append("preserve-channels")
            p.notes.append("preserve-channels: the report's massive / LLM.int8 input channels stay INT8 in INT4 layers")
        parts.append("gptq")
    parts += _rotate_keys(r, p)
    if acts and n_tok:
        parts.append("preserve-tokens")
        p.notes.append(f"preserve-tokens: the report flags {n_tok} outlier token(s)"
                       + (f" (top: {report.outlier_tokens()[0]['token']!r})" if report is not None and n_tok else
                          " (no report: BOS assumed, threshold 100)"))
    return parts


# Candidate plans measured auto chooses among, one line each: (plan, when). "rules" is auto-fast's plan,
# "rules~rotate" the same rules with the rotation decision reversed; anything else is a '+'-join of METHODS
# (a new method is one line, e.g. ("smooth+clip+awq", "w4")). when: "always", "w4" (weights below 8 bits),
# "act" (activations quantized), "fp8" (FP8 weights). Each costs one mitigate and one quantize (choose). The rules'
# weight rounding (GPTQ for INT4 weights) joins every candidate, "none" included.
AUTO_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("rules", "always"),
    ("rules~rotate", "always"),
    ("none", "always"),
    # FP8: the e4m3 mantissa's relative error on every value is the loss, not the outliers' range; GPTQ on the e4m3
    # grid, and the few costliest linears (the last layer's, on SmolLM2) in float (docs/FP8_ACCURACY.md). Without
    # smoothing: e4m3's error is relative, so moving range between x and W gains nothing (SmolLM2, RTN: 1.0422x with
    # it, 1.0416x without), and with GPTQ fitted on the same calibration windows the KL proxy preferred it (0.0152)
    # while it measured 1.027x on the test set against 1.010x without it
    ("preserve-tokens+gptq+keep-float", "fp8"),
)
_WHEN = {"always": lambda r: True, "w4": _weights4, "act": lambda r: r is not None and r.act is not None,
         "fp8": lambda r: r is not None and r.weight is not None and r.weight.type == "float"}


def candidates(r, report, extra: list[str] | None = None) -> list[str]:
    """The method strings measured auto tries for recipe `r` (AUTO_CANDIDATES; `extra` methods added to each)."""
    extra = list(extra or []) + (["gptq"] if _weights4(r) and "learned" not in (extra or []) else [])
    extra += ["rotate-keys"] if _kv4(r) else []      # a KV-cache format, like the rounding: every candidate has it
    out = []
    for spec, when in AUTO_CANDIDATES:
        if not _WHEN[when](r):
            continue
        if spec.startswith("rules"):
            default = "rotate" in _rules(r, report, MitigationPlan())
            parts = _rules(r, report, MitigationPlan(), rotate=(not default) if spec == "rules~rotate" else None)
        else:
            parts = [m for m in spec.split("+") if m != "none"]
        method = "+".join(dict.fromkeys(parts + extra)) or "none"
        if method not in out:
            out.append(method)
    return out


# ---- applying ------------------------------------------------------------------------------------
def _fit_learned(p: MitigationPlan, r, device) -> None:
    """auto's learned budget for the device the learned step runs on (plan.learned_budget: a CPU gets a sixth of a
    GPU's window-steps for w4a4), once. A budget that is not auto's own (written into the plan) stays."""
    def budget(dev=None):
        lw = learned_budget(r, dev)
        if p.target == "engine":             # as restrict_to_engine leaves it: integer zero points
            lw.zero_point = "int"
        return lw

    if p.learned is None or r is None or p.learned.device is not None or p.learned != budget():
        return
    lw = budget(device)
    if (lw.steps, lw.batch_size) != (p.learned.steps, p.learned.batch_size):
        p.notes.append(f"learned: {lw.steps} steps x {lw.batch_size} windows on {lw.device} (auto's budget there; "
                       "name +learned200x8 in the recipe for the GPU's)")
    p.learned = lw


@torch.no_grad()
def mitigate(model, plan_: MitigationPlan | str | Path, calib=None, quiet: bool = False, report=None,
             pipeline: str = "auto", device=None):
    """Apply the plan to `model` in place: rotate -> smooth -> clip -> choose preserved channels.

    Returns the plan's recipe with its quantizer-side settings (or None when the plan names no recipe);
    the plan object records what was chosen (alphas, ratios, channels) for saving next to the model.
    pipeline: "auto" | "memory" | "sequential" (sysq.sequential: one decoder layer at a time on `device`).
    """
    p = plan_ if isinstance(plan_, MitigationPlan) else MitigationPlan.load(plan_)
    r = recipe_of(p.recipe)
    if (p.smooth or p.clip or p.search) and calib is None:
        raise SysqError("this plan searches on calibration data (auto / smooth / clip): pass calib, e.g. "
                        "sysq.calibration(tokenizer, n=32)")
    if p.learned is not None:                               # where quantize's learned step will run
        _fit_learned(p, r, choose_pipeline(model, pipeline, device, whole="learned rounding").device)
    measured = p.search is not None and p.search.chosen is None
    whole = "measured auto" if measured else "keep-float" if p.keep_float and not p.keep_float.linears else None
    path = choose_pipeline(model, pipeline, device, whole=whole)
    if measured:                                            # measured auto: the winner is applied as measured
        if path.sequential:
            raise SysqError("measured auto copies the model once per candidate and runs it whole, which the "
                            "sequential pipeline exists to avoid: plan with method 'auto-fast' (the rules; CLI "
                            "--fast) or a named method, or use pipeline='memory' on a device that holds the model (loaded "
                            "without offload)")
        choose(model, p, calib, report if report is not None else getattr(p, "_report", None), quiet)
        object.__setattr__(model, "_sysq_plan", p)
        return apply_to_recipe(r, p) if r is not None else None
    rule = token_rule(p.preserve_tokens) if r is not None and r.act is not None else None
    if p.token_scales is not None and not p.token_scales.linears:
        p.token_scales.linears = token_scale_linears(report, model)
    sim = apply_to_recipe(r, p) if r is not None else None       # what the searches simulate
    # the clip searches round weights on the grid quantize will use (auto's learned step may narrow it: w4a4)
    rc = r if sim is None else dataclasses.replace(r, weight=sim.weight, ragged=sim.ragged)
    if p.rotate:
        p.rotate, notes = fit_rotation(p.rotate, model)
        p.notes += [n for n in notes if n not in p.notes]
    log.info("mitigate: %s", path)
    if path.sequential and p.keep_float is not None and not p.keep_float.linears:
        raise SysqError("keep-float measures each linear in the whole quantized model, which the sequential pipeline "
                        "exists to avoid: name the linears in the plan (keep_float.linears) or use pipeline='memory'")
    if path.sequential:
        from .layerwise import mitigate_layers
        mitigate_layers(model, p, rc, sim, calib, rule, path.device, quiet=quiet, report=report)
        object.__setattr__(model, "_sysq_plan", p)
        return apply_to_recipe(r, p) if r is not None else None
    if p.rotate:
        rotate(model, p.rotate)
    if p.smooth:
        smooth(model, calib, p.smooth, sim if sim is not None else "w8a8-static", rule, quiet=quiet)
    refs = get_adapter(model).linear_refs()
    if p.clip or (p.preserve_channels is not None and not p.preserve_channels.channels):
        stats = input_stats(model, calib, {ref.name: ref.module for ref in refs}, rule, quiet=quiet)
        if p.clip and p.clip.weights and r is not None:
            p.clip.chosen.update({f"{k}.weight": v for k, v in
                                  clip_weights({ref.name: ref.module for ref in refs}, rc, p.clip, stats).items()})
        if p.clip and p.clip.activations and r is not None:
            for ref in refs:
                ratio = activation_ratio(stats[ref.name], ref.module.weight, rc, p.clip.activation_ratios,
                                         p.clip.floor.get(ref.name, 0.0) if rule is None else 0.0, rule is not None)
                p.clip.chosen[f"{ref.name}.act"] = ratio
        if p.preserve_channels is not None and not p.preserve_channels.channels:
            chans = channels_from_report(report, model, p.preserve_channels.per_linear) if report is not None \
                else channels_from_stats({k: s.absmax for k, s in stats.items()}, p.preserve_channels.per_linear)
            p.preserve_channels.channels = chans
    k = p.keep_float
    if k is not None and r is not None:
        if not k.linears:       # measured on the mitigated model, with the recipe as quantize will run it
            costs = linear_costs(model, apply_to_recipe(r, p), calib, k.windows, quiet)
            k.linears = list(costs)[:k.count]
            k.scores = {n: costs[n] for n in k.linears}
        k.share = weight_share(model, k.linears)
        log.info("mitigate: keep-float %s (%.2f%% of the weights)", ", ".join(k.linears), 100 * k.share)
    object.__setattr__(model, "_sysq_plan", p)
    return apply_to_recipe(r, p) if r is not None else None


def token_scale_linears(report, model) -> list[str]:
    """Linears that get per-token scales in an engine plan: every MLP output linear (down_proj / fc2), whose input
    is where systematic outliers are born and where per-token magnitudes spread widest (on SmolLM2 the largest
    token max is 5x to 2,200x the median token max at down_proj inputs, 1.2x to 5.3x at every other linear
    input), plus any other linear whose input carries the report's outlier tokens (massive, or token max over
    64x the median: Sun et al., PrefixQuant). Measured on SmolLM2 w8a8-static (engine plan, 512 x 40): the
    report's 6 linears alone 1.055x FP, all 30 MLP outputs 1.014x."""
    refs = get_adapter(model).linear_refs()
    out = []
    for ref in refs:
        flagged = False
        if report is not None:
            try:
                s = report.linear_input_stats(ref.name)
                flagged = bool(s.get("outlier_tokens") or s.get("massive_channels"))
            except SysqError:
                pass
        if flagged or ref.role in ("down", "fc2"):
            out.append(ref.name)
    return out


# ---- measured auto ---------------------------------------------------------------------------------
def _key(p: MitigationPlan) -> str:
    d = p.to_dict()
    for k in ("method", "notes", "search"):
        d.pop(k)
    return repr(d)


@torch.no_grad()
def _logprobs(model, ids: torch.Tensor) -> list[torch.Tensor]:
    device = next(model.parameters()).device
    return [F.log_softmax(model(input_ids=w[None].to(device), use_cache=False).logits[0].float(), -1).cpu()
            for w in ids]


@torch.no_grad()
def kl_tokens(model, ids: torch.Tensor, ref: list[torch.Tensor]) -> torch.Tensor:
    """KL(float || model) at every position of `ids`: [windows, positions] (nats)."""
    return torch.stack([(lp_ref.exp() * (lp_ref - lp)).sum(-1) for lp_ref, lp in zip(ref, _logprobs(model, ids))])


def kl_to(model, ids: torch.Tensor, ref: list[torch.Tensor]) -> float:
    """Mean KL(float || model) of the output distributions over every position of `ids` (nats per token)."""
    return float(kl_tokens(model, ids, ref).mean())


def _segments(kl: torch.Tensor, size: int) -> torch.Tensor:
    """Mean KL per run of `size` positions of each window (the units of the paired noise estimate)."""
    return torch.cat([c.mean(-1) for c in kl.split(max(1, size), dim=-1)]) if kl.numel() else kl.flatten()


def segment_size(segment: int | None, score: torch.Tensor) -> int:
    """Tokens per unit of the paired noise estimate: `segment`, or enough units for 16 over the score windows."""
    if segment:
        return segment
    return max(8, min(128, score.numel() // 16))


def _rounds(cp: MitigationPlan, recipe) -> bool:
    """Does the recipe (with this plan) round its weights other than to nearest (GPTQ, learned)?"""
    r = recipe_of(recipe) if recipe is not None else None
    return cp.rounding is not None or (r is not None and r.method != "rtn")


def _score(m, cp: MitigationPlan, recipe, qwin, score, ref, rtn: bool, stop=None) -> torch.Tensor:
    """KL per scored token of a quantized copy of the mitigated `m` (weights rounded to nearest when `rtn`), window
    by window: [windows scored, positions]; `stop(kl so far)` True ends it before the last window."""
    from ..quant.api import quantize
    q = copy.deepcopy(m)
    if rtn and recipe is not None and _rounds(cp, recipe):
        object.__setattr__(q, "_sysq_plan", dataclasses.replace(cp, rounding=None))
        recipe = dataclasses.replace(recipe_of(recipe), method="rtn")
    quantize(q, recipe, qwin, quiet=True, pipeline="memory")
    rows = []
    for w, lp in zip(score, ref):
        rows.append(kl_tokens(q, w[None], [lp])[0])
        if stop is not None and len(rows) < len(score) and stop(torch.stack(rows)):
            break
    return torch.stack(rows)


def _paired(kl: torch.Tensor, base: torch.Tensor, seg: int) -> tuple[float, float]:
    """Mean and standard error of KL minus the rules' `base`, paired per segment over the windows `kl` covers."""
    d = _segments(kl, seg) - _segments(base[:len(kl)], seg)
    return float(d.mean()), (float(d.std() / d.numel() ** 0.5) if d.numel() > 1 else float("inf"))


def decide(segs: dict[str, torch.Tensor], rules: str, z: float) -> tuple[str, dict[str, float]]:
    """The rules' candidate unless another one's mean KL is lower by more than `z` standard errors of the paired
    per-segment difference (the spread of the proxy over the score windows); among those, the least KL.
    Returns (choice, candidate -> standard error of its difference to the rules)."""
    base = segs[rules]
    best, noise = rules, {}
    for m, v in segs.items():
        if m == rules:
            continue
        d = base - v                              # > 0 where the candidate is closer to the float model
        se = float(d.std() / d.numel() ** 0.5) if d.numel() > 1 else float("inf")
        noise[m] = se
        if float(d.mean()) > z * se and float(v.mean()) < float(segs[best].mean()):
            best = m
    return best, noise


def split(n: int, score_windows: int, quant_windows: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """auto's fit / quantize / score split of `n` calibration windows, as [start, stop) ranges. Every data-fitted
    step of a candidate (smoothing statistics and strengths, clip ranges, preserved channels, static scales, GPTQ
    Hessians) sees only the first n - s windows and its KL is taken on the last s = min(score_windows, n // 2), so
    a candidate is not rewarded for fitting the windows it is scored on; the quantizer calibrates on the first
    quant_windows of the fit ones. A single window cannot be split: it is fitted and scored on."""
    s = min(score_windows, n // 2)
    if s == 0:
        return (0, n), (0, n), (0, n)
    return (0, n - s), (0, max(1, min(quant_windows, n - s))), (n - s, n)


def _span(r) -> str:
    return f"window {r[0]}" if r[1] - r[0] == 1 else f"windows {r[0]}-{r[1] - 1}"


def coarse(cp: MitigationPlan, step: int) -> MitigationPlan:
    """The candidate's searched grids thinned to every `step`-th point while auto ranks it (smoothing strengths:
    0.1, 0.2, .. 0.9 of 0.05 .. 0.95; weight clip ratios: 1.0, 0.95, .. 0.7): the grids' searches are most of a
    mitigate, the transforms are what is ranked, and the winner is fitted again on the full grids."""
    if step > 1 and cp.smooth is not None and cp.smooth.alpha is None:
        cp.smooth.alphas = cp.smooth.alphas[step - 1::step]
    if step > 1 and cp.clip is not None:
        cp.clip.weight_ratios = cp.clip.weight_ratios[::step]
    return cp


def _candidate(report, p: MitigationPlan, method: str, model) -> MitigationPlan:
    cp = plan(report, p.recipe, method, target=p.target)
    # auto's learned step narrows the weights (w4a4: per-channel -> groups of 32): the candidates' searches and
    # scores see that grid, as they do when the recipe names it (w4a4+kv4g32 scored per channel chose a plan at
    # 1.697x FP where w4a4+g32+kv4g32's gave 1.469x; docs/INT4.md, thirteenth session)
    cp.learned = p.learned if p.learned is not None else cp.learned
    if cp.rotate:
        cp.rotate, notes = fit_rotation(cp.rotate, model)
        cp.notes += notes
    return cp


def choose(model, p: MitigationPlan, calib, report=None, quiet: bool = False) -> MitigationPlan:
    """Measured auto, in place on `p` and `model`. Each candidate plan (narrowed to the family's exact transforms
    and to the target, duplicates dropped) is applied to a copy of `model` as sysq.mitigate applies it, with the
    fit windows (`split`: all but the last score_windows) and every grid_step-th point of its searched grids
    (`coarse`); a second copy is quantized with the first
    quant_windows of them (INT4 weights rounded to nearest: Search.proxy_rounding) and scored by the KL of its
    output distribution from the float model's on the last score_windows windows, which no fitted step saw
    (Search.split). The rules' plan stays unless a candidate beats it by more than the proxy's noise (`decide`);
    the winner is then applied to `model` with every calibration window, so auto gives exactly what planning the
    chosen candidate by name gives. Cost, bounded and logged before it starts: per candidate one mitigate, one RTN /
    static quantize and a forward pass over at most score_windows; one float pass and the winner's mitigate."""
    sc = p.search
    start = time.perf_counter()
    ids = calib.ids if hasattr(calib, "ids") else calib
    fit, qwin, score = split(len(ids), sc.score_windows, sc.quant_windows)
    sc.split = {"fit": list(fit), "quantize": list(qwin), "score": list(score)}
    fit, qwin, score = (ids[a:b] for a, b in (fit, qwin, score))
    cands, seen = {}, {}
    for method in sc.candidates:
        cp = _candidate(report, p, method, model)
        key = _key(cp)
        coarse(cp, sc.grid_step)
        if key in seen:
            log.info("auto: %r is %r on %s", method, seen[key], get_adapter(model).name)
            continue
        seen[key] = method
        cands[method] = cp
    rules = sc.rules if sc.rules in cands else next(iter(cands))
    cands = {rules: cands[rules], **cands}        # scored first: the others stop early against it
    rtn = sc.proxy_rounding == "rtn"
    log.info("auto: cost bound: %d candidate plans x (one mitigate on %d calibration windows with 1/%d of the "
             "smoothing / clip grids, one %squantize on %d, "
             "a forward pass on %d held out of both) + one float pass + the winner's mitigate on all %d: %s", len(cands),
             len(fit), sc.grid_step, "RTN-weight " if rtn else "", len(qwin), len(score), len(ids), ", ".join(cands))
    ref = _logprobs(model, score)
    sc.scores, sc.seconds, sc.stopped, segs, kept, worse = {}, {}, {}, {}, {}, {}
    seg = segment_size(sc.segment, score)
    base = None

    def clearly_worse(kl):        # worse than the rules by z standard errors on the windows scored so far
        d, se = _paired(kl, base, seg)
        return d > sc.z * se

    for method, cp in tqdm(cands.items(), desc="auto: candidates", disable=quiet):
        t = time.perf_counter()
        m = copy.deepcopy(model)
        recipe = mitigate(m, cp, fit, quiet=True, report=report, pipeline="memory")   # where the copies are
        kl = _score(m, cp, recipe if recipe is not None else p.recipe, qwin, score, ref, rtn,
                    stop=clearly_worse if base is not None else None)
        if method == rules:
            base = kl
        if len(kl) < len(score):      # stopped: it cannot win, and is left out of the decision
            sc.stopped[method] = len(kl)
            worse[method] = _paired(kl, base, seg)[1]
        else:
            segs[method] = _segments(kl, seg)
        sc.scores[method] = float(kl.mean())
        sc.seconds[method] = round(time.perf_counter() - t, 2)
        best_so_far, _ = decide(segs, rules, sc.z) if rules in segs else (rules, {})
        kept = {k: v for k, v in {**kept, method: m}.items() if k in (rules, best_so_far)}
        del m
        log.info("auto: %s  KL %.5f  (%.1fs)", method, sc.scores[method], sc.seconds[method])
    best, sc.noise = decide(segs, rules, sc.z)
    sc.noise.update(worse)
    confirm, challenger = "", best
    if rtn and best != rules and (_rounds(cands[best], p.recipe) or _rounds(cands[rules], p.recipe)):
        # the RTN proxy can rank plans differently from the rounding they will get (GPTQ / learned): the
        # challenger replaces the rules only if it still wins by the margin with the real rounding
        t = time.perf_counter()
        real = {m: _segments(_score(kept[m], cands[m], apply_to_recipe(recipe_of(p.recipe), cands[m]), qwin, score,
                                    ref, False), seg) for m in (rules, best)}
        again, se = decide(real, rules, sc.z)
        confirm = (f"; confirmed with the recipe's rounding (KL {float(real[best].mean()):.5f} vs the rules' "
                   f"{float(real[rules].mean()):.5f}, noise {se[best]:.2g}, {time.perf_counter() - t:.1f}s)")
        if again != best:
            confirm = confirm.replace("confirmed", "not confirmed") + ": the rules stay"
            best = rules
    sc.noise = {k: round(v, 6) for k, v in sc.noise.items()}
    rounding = "RTN weights" if rtn else "each candidate's own weight rounding"
    del kept
    win = _candidate(report, p, best, model)          # fitted again with every window, as planning it by name
    t = time.perf_counter()
    mitigate(model, win, calib, quiet=quiet, report=report, pipeline="memory")
    refit = time.perf_counter() - t
    for f in ("smooth", "clip", "preserve_channels", "preserve_tokens", "token_scales", "rotate", "rounding",
              "keep_float"):
        setattr(p, f, getattr(win, f))
    sc.chosen, sc.total_seconds = best, round(time.perf_counter() - start, 2)
    table = "; ".join(f"{m}{' (the rules)' if m == rules else f' (vs the rules: +-{sc.noise[m]:.2g})'} {v:.5f}"
                      + (f" (stopped after {sc.stopped[m]} of {len(score)} windows: worse by more than {sc.z:g} "
                         "standard errors)" if m in sc.stopped else "") for m, v in sc.scores.items())
    why = (("the rules' plan: no candidate beat it by more than "
            f"{sc.z:g} standard errors of the paired difference over {len(segs[rules])} segments of "
            f"{min(seg, score.shape[-1])} tokens") if best == rules and not confirm else
           f"{challenger!r} beat the rules by {sc.scores[rules] - sc.scores[challenger]:.3g} > {sc.z:g} x "
           f"{sc.noise[challenger]:.2g} (its noise) with {rounding}") + confirm
    held = ("held out of every fitted step" if sc.split["score"][0] >= sc.split["fit"][1] else
            "one window: scored on the window it was fitted on")
    p.notes = win.notes + [f"auto: chose {best!r}, {why}; KL to the float model (nats/token; each candidate mitigated "
                           f"on calibration {_span(sc.split['fit'])}, quantized with {_span(sc.split['quantize'])}"
                           + (", INT4 weights rounded to nearest" if rtn and win.rounding else "")
                           + (f", smoothing / clip grids thinned to 1/{sc.grid_step}" if sc.grid_step > 1 else "")
                           + f", scored on {_span(sc.split['score'])}, {held}): {table}; the chosen plan applied "
                           f"with all {len(ids)} windows ({refit:.1f}s); search {sc.total_seconds:.1f}s"]
    log.info("auto: chose %s (search %.1fs)", best, sc.total_seconds)
    return p
