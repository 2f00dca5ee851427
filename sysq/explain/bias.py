"""The anchor as an explicit attention bias. The outlier token at position 0 (BOS) sees no context, so its keys
and values at every layer are the same for every text: a fixed prefix key/value pair per layer and head, the
attention-bias form of Sun et al. (2024) and An et al.'s variant (d), with the values the trained model already
uses. :class:`AnchorBias` computes them once in full precision and runs the model on the text without the
anchor token, attending to them. Logits match the original model at float error while the residual stream no
longer carries the massive activation, because the token that carried it is gone.

It reuses the prefix form of preserve-tokens (sysq.mitigate.preserve.PrefixModel) with the prefix computed once:
so the inputs keep the anchor token in front (windows, labels and perplexity code are unchanged), it is checked,
stripped, and the anchor position's logits are the stored full-precision ones.
"""
from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from ..arch import get_adapter
from ..errors import SysqError


class AnchorBias(nn.Module):
    """`model` run with the fixed full-precision keys/values of `prefix_ids` (computed by `float_model`, default
    `model` itself, at construction) in place of those tokens. Forward returns `.logits` [B, T, vocab] for inputs
    that start with `prefix_ids`, like a causal LM."""

    def __init__(self, model: nn.Module, prefix_ids, float_model: nn.Module | None = None):
        super().__init__()
        fm = float_model if float_model is not None else model
        device = next(model.parameters()).device
        self.prefix = torch.as_tensor(prefix_ids, dtype=torch.long).flatten().to(device)
        if self.prefix.numel() < 1:
            raise SysqError("the anchor bias needs at least one prefix token (the model's BOS)")
        with torch.no_grad():
            out = fm(input_ids=self.prefix[None], use_cache=True)
        self.kv = out.get("cache") if out.get("cache") is not None else out.get("past_key_values")  # renamed in 5.2x
        self.anchor_logits = out.logits.detach()
        self.model, self.config = model, model.config
        self._cache_kwarg = get_adapter(model).cache_kwarg

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, use_cache: bool = False, **kwargs):
        p, B = self.prefix.numel(), input_ids.shape[0]
        if input_ids.shape[1] <= p or not torch.equal(input_ids[:, :p], self.prefix.expand(B, p)):
            raise SysqError(f"the anchor-bias model takes windows that start with its anchor token(s) "
                            f"{self.prefix.tolist()} and hold at least one more token; build windows with "
                            "the model's BOS (sysq.windows(..., bos=True))")
        cache = copy.deepcopy(self.kv)
        cache.batch_repeat_interleave(B)
        out = self.model(input_ids=input_ids[:, p:], use_cache=True, **{self._cache_kwarg: cache})
        out.logits = torch.cat([self.anchor_logits.to(out.logits.dtype).expand(B, -1, -1), out.logits], 1)
        if not use_cache:
            out[next(k for k in ("cache", "past_key_values") if k in out)] = None   # renamed in transformers 5.2x
        return out


def bias_summary(runs: dict, max_logit_diff: float, logit_scale: float, prefix: list[int],
                 base: str = "baseline", name: str = "bias") -> dict:
    """Fidelity (max |logit diff| over every position and window) and the residual stream of both models."""
    b, r = runs[base], runs[name]
    return {"prefix_ids": prefix, "max_logit_diff": max_logit_diff, "max_abs_logit": logit_scale,
            "kl": r.kl / r.pred if r.pred else None, "top1_agreement": r.agree / r.pred if r.pred else None,
            "massive_tokens": {"base": int(b.massive.sum()), "bias": int(r.massive.sum())},
            "layers": [{"layer": i, "absmax_base": float(b.absmax[i]), "absmax_bias": float(r.absmax[i]),
                        "massive_base": int(b.massive[i]), "massive_bias": int(r.massive[i]),
                        "threshold_base": float(b.thresh[i] / max(b.windows, 1)),
                        "threshold_bias": float(r.thresh[i] / max(r.windows, 1))} for i in range(b.L)]}


def quantize_under_bias(model: nn.Module, recipe, calib, prefix_ids, float_model: nn.Module,
                        quiet: bool = False) -> AnchorBias:
    """sysq.quantize's steps on `model` (in place) with the calibration run through the anchor bias, so the static
    activation ranges never see the anchor token; the prefix keys/values come from `float_model` (the same model
    unquantized, after any mitigation). A mitigated model's plan applies as in sysq.quantize, except its preserved
    tokens: the anchor bias takes their place. Returns the AnchorBias wrapper to evaluate or run."""
    from ..quant.api import calibrate, prepare, quantize_weights, with_plan
    from ..quant.recipes import get_recipe
    r = with_plan(get_recipe(recipe), getattr(model, "_sysq_plan", None))
    if r.act is not None and (r.act.preserve_threshold is not None or r.act.preserve_positions):
        r = dataclasses.replace(r, act=dataclasses.replace(r.act, preserve_threshold=None, preserve_positions=()))
    if r.kv is not None:
        raise SysqError(f"recipe {r.name!r} quantizes the KV cache; the anchor bias keeps its prefix keys/values in "
                        "float and is not built for KV-cache recipes: use a recipe without kv")
    prepare(model, r)
    wrapped = AnchorBias(model, prefix_ids, float_model=float_model)
    calibrate(wrapped, calib, quiet=quiet)
    quantize_weights(model, r, calib, quiet=quiet)
    return wrapped
