"""Outliers before and after mitigation: the panel `sysq detect --mitigate PLAN` adds to the report.

The same windows go through the float model (the report), the plan's transforms, and `detect` again (the
after-report). The panel puts the two side by side where quantization feels them:
  * per layer, the residual stream's largest |h| and down_proj's largest input |x| (where the systematic
    outliers are born);
  * per linear, the static per-tensor activation scale a quantizer would calibrate on these windows:
    absmax / qmax over every token before, over the tokens the plan leaves quantized after (preserved
    tokens stay float, so they no longer set the scale).
A function-preserving transform leaves the logits alone but moves these numbers; the scales follow them.
"""
from __future__ import annotations

import logging

import torch

from ..arch import get_adapter
from .calib import input_stats
from .preserve import token_rule
from .qsim import recipe_of

log = logging.getLogger(__name__)


def static_scales(model, calib, rule=None, bits: int = 8, quiet: bool = True) -> dict[str, dict]:
    """Per decoder linear: the absmax a static per-tensor quantizer calibrates on `calib` (tokens the rule
    preserves left out), its channel, and scale = absmax / (2^(bits-1) - 1)."""
    refs = get_adapter(model).linear_refs()
    stats = input_stats(model, calib, {r.name: r.module for r in refs}, rule, sample_windows=0, quiet=quiet)
    qmax = 2 ** (bits - 1) - 1
    out = {}
    for r in refs:
        a = stats[r.name].absmax_kept
        v, ch = a.max(0)
        out[r.name] = {"layer": r.layer, "role": r.role, "absmax": float(v), "channel": int(ch),
                       "scale": float(v) / qmax}
    return out


def compare(before, after, scales_before: dict, scales_after: dict, plan, bits: int) -> dict:
    """The before/after panel as plain data (stored under report.json's "mitigation" key)."""
    def site(report, kind):
        return {s["layer"]: s for s in report.sites(kind)}

    rb, ra, db, da = site(before, "resid"), site(after, "resid"), site(before, "down_in"), site(after, "down_in")
    layers = []
    for i in sorted(rb):
        layers.append({"layer": i,
                       "resid_before": rb[i]["absmax"], "resid_channel_before": rb[i]["absmax_at"]["channel"],
                       "resid_pos_before": rb[i]["absmax_at"]["pos"],
                       "resid_after": ra[i]["absmax"], "resid_channel_after": ra[i]["absmax_at"]["channel"],
                       "resid_pos_after": ra[i]["absmax_at"]["pos"],
                       "down_in_before": db[i]["absmax"] if i in db else None,
                       "down_in_after": da[i]["absmax"] if i in da else None})
    scales = {n: {"layer": s["layer"], "role": s["role"], "before": s["scale"], "after": scales_after[n]["scale"],
                  "channel_before": s["channel"], "channel_after": scales_after[n]["channel"]}
              for n, s in scales_before.items()}

    def side(key):
        v = torch.tensor([s[key] for s in scales.values()])
        top = max(scales, key=lambda n: scales[n][key])
        return {"largest": float(v.max()), "largest_linear": top, "median": float(v.median()),
                "largest_over_median": float(v.max() / v.median().clamp_min(1e-12))}

    return {"plan": plan.to_dict(), "recipe": plan.recipe, "bits": bits,
            "summary": {"before": {**side("before"), "resid_max": max(l["resid_before"] for l in layers),
                                   "headline": before.summary.get("magnitude")},
                        "after": {**side("after"), "resid_max": max(l["resid_after"] for l in layers),
                                  "headline": after.summary.get("magnitude")}},
            "layers": layers, "scales": scales}


@torch.no_grad()
def before_after(model, report, plan_, windows, calib, tokenizer=None, quiet: bool = False, **detect_kw):
    """Mitigate `model` in place with `plan_` and detect again on the same `windows`.

    `report` is the float model's report on `windows`; `calib` feeds the plan's searches and the scales.
    Returns (after-report, panel); the panel is also attached to `report.mitigation`.
    """
    from ..detect import detect
    from .api import mitigate

    r = recipe_of(plan_.recipe)
    bits = r.act.bits if r is not None and r.act is not None else 8
    log.info("mitigate.compare: static scales of the float model")
    scales_before = static_scales(model, calib, None, bits, quiet)
    mitigate(model, plan_, calib, quiet=quiet, report=report)
    rule = token_rule(plan_.preserve_tokens) if r is not None and r.act is not None else None
    log.info("mitigate.compare: static scales of the mitigated model")
    scales_after = static_scales(model, calib, rule, bits, quiet)
    log.info("mitigate.compare: detect on the mitigated model")
    after = detect(model, windows, tokenizer=tokenizer, quiet=quiet, **detect_kw)
    after.model["name"] = f"{report.model.get('name') or report.model['family']} + {plan_.method}"
    report.mitigation = compare(report, after, scales_before, scales_after, plan_, bits)
    return after, report.mitigation
