"""preserve: keep the few outlier channels and outlier tokens out of the low-precision path.

Sources:
  * channels: Dettmers et al. 2022, "LLM.int8()" (arXiv 2208.07339) keeps outlier feature columns in
    fp16 at run time; QuIK (Ashkboos et al. 2023, arXiv 2310.09259) and Atom (Zhao et al. 2023,
    arXiv 2310.19102) fix a small set of input channels per linear offline and keep them in higher
    precision. sysq picks them offline from the outlier report (the massive and LLM.int8 channels each
    linear's input shows), so the choice is static and explained.
  * tokens: Chen et al. 2024, "PrefixQuant" (arXiv 2410.05265) and Liu et al. 2024, "IntactKV"
    (arXiv 2403.01241). The systematic outliers sit on a handful of tokens (the first token, some
    delimiters); left in the per-tensor scale, one such token sets the scale for every other token.
    Two forms:
      - run-time rule: at each quantized linear, tokens at fixed `positions` and tokens whose max |x|
        exceeds `threshold` are excluded from the static range and passed through in float
        (the quant engine's QuantSpec.preserve_positions / preserve_threshold);
      - prefix form (:class:`PrefixModel`): the key/value cache of the first `prefix` tokens comes from
        the full-precision model; the quantized model runs on the rest, attending to that cache.
"""
from __future__ import annotations

import dataclasses
import logging

import torch
from torch import nn

from ..arch import get_adapter
from ..errors import SysqError
from .calib import TokenRule
from .plan import MitigationPlan, PreserveChannels, PreserveTokens

log = logging.getLogger(__name__)


def token_rule(p: PreserveTokens | None) -> TokenRule | None:
    if p is None or (p.threshold is None and not p.positions):
        return None
    return TokenRule(tuple(p.positions), p.threshold)


def apply_to_recipe(recipe, plan: MitigationPlan):
    """The recipe with the plan's quantizer-side settings: preserved tokens (activation spec), preserved
    channels, per-linear activation clip ratios, the weight rounding (gptq, learned; for plan.learned also its
    budget, loss, zero point, group size and activation clip), the keys' rotation in a quantized KV cache and the
    linears kept in float (recipe.skip). Idempotent.
    sysq.quantize applies it to a mitigated model's plan itself."""
    from ..quant.recipes import get_recipe
    r = get_recipe(recipe)
    p = plan.preserve_tokens
    if p is not None and r.act is not None and p.prefix == 0:
        r = dataclasses.replace(r, act=dataclasses.replace(r.act, preserve_threshold=p.threshold,
                                                           preserve_positions=tuple(p.positions)))
    lw = plan.learned
    rounding = plan.rounding if plan.rounding in ("gptq", "learned") and r.weight is not None else r.method
    if r.method not in ("rtn", rounding):       # rtn is also the unset default: only a named method is worth a word
        log.warning("%s: the plan's weight rounding %r replaces the recipe's method %r (the plan decides; change "
                    "`rounding` in its plan.yaml, or make the plan for this recipe)", r.name, rounding, r.method)
    if lw is not None and r.weight is not None and r.method != "learned":    # a recipe's own +learnedN stays
        w, ragged = r.weight, r.ragged
        if not w.symmetric:
            w = dataclasses.replace(w, zero_point=lw.zero_point)
        if w.granularity == "channel" or (w.granularity == "group" and w.group_size > lw.group_size):
            w, ragged = dataclasses.replace(w, granularity="group", group_size=lw.group_size), "halve"
        r = dataclasses.replace(r, weight=w, ragged=ragged, method="learned", learn_steps=lw.steps,
                                learn_batch_size=lw.batch_size, learn_loss=lw.loss,
                                learn_amp=lw.amp, learn_act_clip=lw.act_clip, learn_lr=lw.lr,
                                learn_attn_steps=lw.attn_steps)
    if plan.rotate_keys and r.kv is not None and not r.kv.key_rotation:
        r = dataclasses.replace(r, kv=dataclasses.replace(r.kv, key_rotation=True))
    if plan.rounding in ("gptq", "learned") and r.weight is not None:
        r = dataclasses.replace(r, method=plan.rounding)
    c = plan.preserve_channels
    if c is not None and c.channels:
        r = dataclasses.replace(r, preserve_channels={k: list(v) for k, v in c.channels.items()},
                                preserve_channels_bits=c.bits)
    k = plan.keep_float
    if k is not None and k.linears:
        r = dataclasses.replace(r, skip=tuple(dict.fromkeys((*r.skip, *k.linears))))
    t = plan.token_scales
    if t is not None and t.linears and r.act is not None and not r.act.dynamic:
        r = dataclasses.replace(r, dynamic_act=tuple(t.linears))
    ratios = {k[: -len(".act")]: float(v) for k, v in (plan.clip.chosen if plan.clip else {}).items()
              if k.endswith(".act") and k[: -len(".act")] not in r.dynamic_act}
    if ratios and r.act is not None:
        r = dataclasses.replace(r, act_clip_ratios=ratios)
    return r


def channels_from_report(report, model, per_linear: int = 8) -> dict[str, list[int]]:
    """Per decoder linear: its input's massive channels, then its LLM.int8 channels, at most `per_linear`."""
    out = {}
    for ref in get_adapter(model).linear_refs():
        try:
            s = report.linear_input_stats(ref.name)
        except SysqError:
            continue
        picked = [int(m["channel"]) for m in s.get("massive_channels", [])]
        int8 = [int(c["channel"]) if isinstance(c, dict) else int(c) for c in s.get("int8_channels", [])]
        picked += [c for c in int8 if c not in picked]
        if picked:
            out[ref.name] = [int(c) for c in picked[:per_linear]]
    return out


def channels_from_stats(channel_absmax: dict[str, torch.Tensor], per_linear: int = 8,
                        ratio: float = 8.0) -> dict[str, list[int]]:
    """Without a report: per linear, the channels whose calibration |x| max exceeds `ratio` x the median
    channel max (at most `per_linear`, largest first)."""
    out = {}
    for name, a in channel_absmax.items():
        order = a.argsort(descending=True)[:per_linear]
        keep = [int(j) for j in order if a[j] > ratio * a.median()]
        if keep:
            out[name] = keep
    return out


class PrefixModel(nn.Module):
    """Prefix form of preserve-tokens: the first `prefix` tokens run through `float_model`, whose key/value
    cache the quantized model then attends to for the rest of the sequence. Forward returns an object
    with `.logits` [batch, seq, vocab] like a causal LM, so perplexity and generation code can use it."""

    def __init__(self, float_model: nn.Module, quant_model: nn.Module, prefix: int = 1):
        super().__init__()
        if prefix < 1:
            raise SysqError(f"prefix must be >= 1 token, got {prefix}")
        self.float_model, self.quant_model, self.prefix = float_model, quant_model, prefix
        self.config = quant_model.config

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, use_cache: bool = False, **kwargs):
        p = self.prefix
        if input_ids.shape[1] <= p:
            return self.float_model(input_ids=input_ids, use_cache=False)
        head = self.float_model(input_ids=input_ids[:, :p], use_cache=True)
        tail = self.quant_model(input_ids=input_ids[:, p:], past_key_values=head.past_key_values, use_cache=True)
        tail.logits = torch.cat([head.logits.to(tail.logits.dtype), tail.logits], dim=1)
        if not use_cache:
            tail.past_key_values = None
        return tail
