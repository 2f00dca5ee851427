"""ExplainReport: what the interventions did, as report.json (schema "sysq.explain/1"), report.md and plots.

report.json keys: schema, model, data, thresholds, mode, targets {channel, channels, massive_layer,
  massive_columns, born_layer, born_columns, initial, controls, seed, reason}, anchors, runs {name: what it does},
  ablation {ablate | ablate-born: layer, columns, control_columns, removed, control_keeps, channel_after_max,
            massive_after, layers[{layer, channel_base/ablated/control, massive_base/ablated/control,
            threshold_base}]},
  sinks {sink_eps, runs {name: mass[L], sink_share[L], mean_mass, mean_sink_share}},
  influence {name: hidden_rel_change[L], kl, top1_agreement, ppl, ppl_base, predictions},
  updates {unit, layers[{layer, pairs, spearman, pearson, mean_norm_mass_lt_0.1, mean_norm_mass_ge_0.9,
           share_mass_ge_0.9, median_norm, bins[], anchor_write[H], update_anchor, update_other}],
           median_spearman, layers_negative, layers_measured, median_high_low_ratio},
  bias {prefix_ids, max_logit_diff, max_abs_logit, kl, top1_agreement, massive_tokens {base, bias},
        layers[{layer, absmax_base, absmax_bias, massive_base, massive_bias, threshold_base, threshold_bias}]},
  headline[], notes[], cost
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SysqError
from ..io import atomic_dir

SCHEMA = "sysq.explain/1"


def _g(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}g}" if isinstance(v, float) else str(v)


@dataclass
class ExplainReport:
    model: dict
    data: dict
    thresholds: dict
    mode: str
    targets: dict
    anchors: dict
    runs: dict
    ablation: dict
    sinks: dict
    influence: dict
    updates: dict
    bias: dict | None
    updates_by_run: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    headline: list = field(default_factory=list)
    cost: dict = field(default_factory=dict)
    schema: str = SCHEMA
    arrays: dict = field(default_factory=dict, repr=False)   # plot data only, not in report.json

    KEYS = ("model", "data", "thresholds", "mode", "targets", "anchors", "runs", "ablation", "sinks", "influence",
            "updates", "bias", "updates_by_run", "notes", "headline", "cost")

    def to_dict(self) -> dict:
        return {"schema": self.schema} | {k: getattr(self, k) for k in self.KEYS}

    @classmethod
    def load(cls, path) -> "ExplainReport":
        p = Path(path)
        p = p / "report.json" if p.is_dir() else p
        if not p.exists():
            raise SysqError(f"no explain report at {p}; run `sysq explain --out {p.parent}` first")
        d = json.loads(p.read_text())
        if d.get("schema") != SCHEMA:
            raise SysqError(f"{p} is not a sysq explain report (schema {d.get('schema')!r}, want {SCHEMA!r})")
        return cls(**{k: d[k] for k in cls.KEYS})

    def save(self, out_dir, plots: bool = True) -> Path:
        """report.json, report.md and plots/*.png, written atomically."""
        from .plots import make_plots
        with atomic_dir(out_dir) as tmp:
            (tmp / "report.json").write_text(json.dumps(self.to_dict(), indent=1, allow_nan=True))
            names = make_plots(self, tmp / "plots") if plots else []
            (tmp / "report.md").write_text(self.render(names))
        return Path(out_dir)

    # ---- findings ------------------------------------------------------------------------------
    def findings(self) -> list[str]:
        """One sentence per claim, with the measured numbers and the control."""
        t, out = self.targets, []
        if t.get("reason"):
            out.append(f"{t['reason'].capitalize()}: nothing to ablate or clamp; key masking and the anchor bias "
                       "use position 0.")
        for name, a in self.ablation.items():
            c, m = a["channel_after_max"], a["massive_after"]
            verdict = ("the massive activation is gone and the control keeps it" if a["removed"] and a["control_keeps"]
                       else "the massive activation is gone, but so it is under the control" if a["removed"]
                       else "the massive activation survives")
            out.append(f"Weight -> activation ({name}: {self.runs[name]}): massive tokens after layer {a['layer']} "
                       f"{m['base']} -> {m['ablated']} (channel "
                       f"{t['channel']} max {c['base']:.4g} -> {c['ablated']:.4g}); random columns "
                       f"{a['control_columns']}: {m['control']} ({c['control']:.4g}): {verdict}.")
        runs = self.sinks["runs"]
        for name in ("ablate", "ablate-anchors", "clamp"):
            if name in runs:
                b, r, ctl = runs["baseline"], runs[name], runs.get(f"{name}-control")
                out.append(f"Activation -> attention ({name}): attention mass on the outlier tokens {b['mean_mass']:.3f}"
                           f" -> {r['mean_mass']:.3f}, sink heads {b['mean_sink_share']:.1%} -> "
                           f"{r['mean_sink_share']:.1%}" + (f" (control {ctl['mean_mass']:.3f}, "
                                                             f"{ctl['mean_sink_share']:.1%})" if ctl else "") + ".")
        inf = self.influence
        parts = [f"{n} KL {_g(v['kl'])} ppl {_g(v['ppl'], 4)}" for n, v in inf.items()]
        if parts:
            base = next(iter(inf.values()))["ppl_base"]
            out.append(f"Influence on the other tokens (baseline ppl {_g(base, 4)}): " + "; ".join(parts) + ".")
        u = self.updates
        if u.get("layers_measured"):
            out.append(f"Minimal updates: head write norm vs attention mass on the anchors, median Spearman "
                       f"{_g(u['median_spearman'])} over {u['layers_measured']} layers ({u['layers_negative']} "
                       f"negative); heads with >= 0.9 of their mass on the anchors write "
                       f"{_g(u['median_high_low_ratio'])} x the norm of heads with < 0.1 (median over "
                       f"{u['layers_with_high_mass']} layers).")
        if self.bias:
            b = self.bias
            top = max(b["layers"], key=lambda r: r["absmax_base"])
            out.append(f"Anchor as explicit bias: max |logit diff| {b['max_logit_diff']:.3g} (logits up to "
                       f"{b['max_abs_logit']:.3g}); massive tokens {b['massive_tokens']['base']} -> "
                       f"{b['massive_tokens']['bias']}; largest |h| {top['absmax_base']:.4g} -> "
                       f"{max(r['absmax_bias'] for r in b['layers']):.4g}.")
        return out

    # ---- markdown ------------------------------------------------------------------------------
    def render(self, plots: list[str]) -> str:
        m, d, t = self.model, self.data, self.targets
        L = [f"# Systematic outliers, by intervention: {m.get('name') or m['family']}\n",
             f"{m['family']} ({m['model_type']}), {m['layers']} layers, {m['heads']} heads, {m['dtype']}. Data: "
             f"{d.get('dataset')}, {d.get('windows')} windows x {d.get('seqlen')} tokens, BOS {d.get('bos')!r}, seed "
             f"{d.get('seed')}. Schema `{self.schema}`. Ablation mode `{self.mode}`; control seed {t['seed']}.\n",
             "## Headline\n"] + [f"- {s}" for s in self.headline] + [""]
        L += ["## Targets (from the detect report)\n",
              f"- dominant channel {t['channel']} (all dominant: {t['channels']}); massive from layer "
              f"{t['massive_layer']}, built by down_proj columns {t['massive_columns']}; born (|h| > massive_abs) in "
              f"layer {t['born_layer']} by columns {t['born_columns']}",
              f"- outlier tokens (anchors): {self.anchors['tokens']} in {self.anchors['windows']} windows; rule: "
              f"{self.anchors['rule']}",
              f"- controls: {t['controls']}\n", "| run | what it does |", "|---|---|"]
        L += [f"| {n} | {desc} |" for n, desc in self.runs.items()] + [""]
        for name, a in self.ablation.items():
            L += [f"## Weight -> activation: {name}\n",
                  "| layer | channel max (base) | ablated | control | massive tokens (base) | ablated | control | "
                  "massive threshold (base, mean) |", "|---|---|---|---|---|---|---|---|"]
            L += [f"| {r['layer']} | {r['channel_base']:.4g} | {r['channel_ablated']:.4g} | {r['channel_control']:.4g} "
                  f"| {r['massive_base']} | {r['massive_ablated']} | {r['massive_control']} | {r['threshold_base']:.4g} |"
                  for r in a["layers"]]
            L.append("")
        runs = self.sinks["runs"]
        L += ["## Activation -> attention: attention mass on the outlier tokens per layer\n",
              f"Mean over heads and over every non-outlier query; in brackets the share of heads with mean mass > "
              f"{self.sinks['sink_eps']} (sink heads). The headline averages the layers after layer "
              f"{self.sinks['after_layer']}.\n",
              "| layer | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
        n_layers = len(next(iter(runs.values()))["mass"])
        L += [f"| {i} | " + " | ".join(f"{r['mass'][i]:.3f} ({r['sink_share'][i]:.0%})" for r in runs.values()) + " |"
              for i in range(n_layers)]
        L += ["", "## Influence on the non-outlier tokens\n",
              "| run | KL from baseline (nats/token) | top-1 agreement | ppl (baseline) | hidden change, last layer |",
              "|---|---|---|---|---|"]
        L += [f"| {n} | {_g(v['kl'])} | {_g(v['top1_agreement'], 4)} | {_g(v['ppl'], 5)} ({_g(v['ppl_base'], 5)}) | "
              f"{_g(v['hidden_rel_change'][-1])} |" for n, v in self.influence.items()]
        u = self.updates
        L += ["", "## Minimal updates\n", f"Unit: {u['unit']}.\n",
              "| layer | Spearman | Pearson | mean norm, mass < 0.1 | mass >= 0.9 | share >= 0.9 | anchor's own write "
              "(mean over heads) | attn update / ‖h‖ (anchor, other) | MLP update / ‖h‖ (anchor, other) |",
              "|---|---|---|---|---|---|---|---|---|"]
        for r in u["layers"]:
            ua, uo = r["update_anchor"], r["update_other"]
            aw = sum(r["anchor_write"]) / len(r["anchor_write"]) if r["anchor_write"] else None
            L.append(f"| {r['layer']} | {_g(r['spearman'])} | {_g(r['pearson'])} | {_g(r['mean_norm_mass_lt_0.1'])} | "
                     f"{_g(r['mean_norm_mass_ge_0.9'])} | {r['share_mass_ge_0.9']:.1%} | {_g(aw)} | "
                     f"{_rel(ua['attn'], ua['h'])}, {_rel(uo['attn'], uo['h'])} | {_rel(ua['mlp'], ua['h'])}, "
                     f"{_rel(uo['mlp'], uo['h'])} |")
        if self.updates_by_run:
            L += ["", "Per run, means over the layers from the first after the massive layer "
                      f"({next(iter(self.updates_by_run.values()))['layers_from']}) on:\n",
                  "| run | median Spearman (all layers) | write, mass >= 0.9 | write, mass < 0.1 | share of pairs >= 0.9 | "
                  "anchor's own write |", "|---|---|---|---|---|---|"]
            L += [f"| {n} | {_g(v['median_spearman'])} | {_g(v['mean_norm_mass_ge_0.9'])} | {_g(v['mean_norm_mass_lt_0.1'])}"
                  f" | {_g(v['share_mass_ge_0.9'])} | {_g(v['anchor_write'])} |" for n, v in self.updates_by_run.items()]
        if self.bias:
            b = self.bias
            L += ["", "## The anchor as an explicit attention bias\n",
                  f"Prefix token(s) {b['prefix_ids']}: max |logit diff| {b['max_logit_diff']:.3g} over every position "
                  f"(logits up to {b['max_abs_logit']:.3g}); KL {_g(b['kl'])}, top-1 agreement "
                  f"{_g(b['top1_agreement'], 4)}.\n",
                  "| layer | max abs (base) | max abs (bias) | massive tokens (base) | (bias) | threshold (base) | (bias) |",
                  "|---|---|---|---|---|---|---|"]
            L += [f"| {r['layer']} | {r['absmax_base']:.4g} | {r['absmax_bias']:.4g} | {r['massive_base']} | "
                  f"{r['massive_bias']} | {r['threshold_base']:.4g} | {r['threshold_bias']:.4g} |" for r in b["layers"]]
        if self.notes:
            L += ["", "## Notes\n"] + [f"- {n}" for n in self.notes]
        if plots:
            L += ["", "## Plots\n"] + [f"![{p}](plots/{p})" for p in plots]
        return "\n".join(L) + "\n"


def _rel(a: float, h: float) -> str:
    return f"{a / h:.3g}" if h else "n/a"
