"""OutlierReport: everything detect() found, as JSON (schema "sysq.outliers/1"), Markdown and plots.

Mitigation reads it through a small API: outlier_channels(), outlier_tokens(), linear_input_stats(),
down_outlier_columns(), token_max_threshold().

report.json keys (schema "sysq.outliers/1"; layers and channels are 0-based ints):
  schema, model {name, family, model_type, layers, hidden_size, heads, kv_heads, dtype},
  data {dataset, seqlen, bos, windows, seed, tokens}, thresholds {Thresholds fields}, cost {...}
  summary      dominant_channels[], dominant_channel, magnitude, emergence_layer, emergence_columns[],
               amplification_layers[], amplification_columns[{layer, columns}], massive_layers[],
               vanishing_layers[], feature_consistency(+_reverse), sequence_consistency(+_reverse),
               sink_eps, token_taxonomy {type: share}
  activation   sites[]: one per (layer, site), site in attn_in | o_in | mlp_in | down_in | resid:
                 layer, site, linears[] (names fed by this input), channels, windows, tokens,
                 absmax, absmax_at {window, pos, token_id, token, type, channel, value},
                 median_abs, mean_abs, token_max_median, massive_floor, top[] (largest token maxima),
                 hits {massive, token_mean_ratio, token_ratio}, outlier_tokens {criterion: {count,
                 positions[], ids[], initial_ids[], taxonomy}}, massive_channels[{channel, tokens, absmax,
                 value, pos, token}], suggested_token_max_threshold, channel_absmax[C], channel_absmean[C] (numpy arrays in memory),
                 resid only: top3_mean[3], large_channels[]; linear inputs only: int8_channels[], int8_share[]
               residual_channels[]: {channel, layers[], absmax, value, at_layer, pos, token, persistent,
                 layer_range}
  linear_inputs {linear name: the site dict above for its input}   (q/k/v share one, gate/up share one)
  weights      {linear name: layer, role, median_ratio, max_ratio, top_columns[{column, ratio, rows[],
               row_values[]}], outlier_columns[], outlier_rows[] (largest row of each outlier column)}
  attention    windows, sink_eps, sink_heads, heads, unit, layers[{layer, outlier_keys,
               outlier_positions[], outlier_tokens[], sink_share[H], sink_heads[], mass_to_first,
               qkv_norms {outlier_tokens{q,k,v}, other_tokens{q,k,v}, ratio{q,k,v}}, map_head}]
  consistency  feature {unit, layers[{layer, linear, activation_channels, weight_columns, both,
               act_to_weight, weight_to_act, largest_rows, rows_in_residual_outliers}], activation,
               weight, both, act_to_weight, weight_to_act}; sequence {unit, layers[{layer, activation,
               attention, both, act_to_attn, attn_to_act}], totals and shares}
  lifecycle[]  per (dominant channel, tokens "initial" | "other"): channel, tokens, emergence_layer,
               emergence {layer, positions, attn, mlp, builder, terms[{column, contribution, x, gate, up,
               w_down, weight_outlier_column, activation_outlier_channel}]}, amplifications[same],
               massive_layers[], vanishing[{layer, h_in, h_out, attn, mlp, mlp_opposite_share,
               cancellation_ratio}], layers[{layer, resid_absmax, h_in, attn, mlp, h_out, ...}]
  tokens       criterion, unit, tokens[{token_id, token, type, count, layers[], sites[]}],
               positions[{pos, count}], taxonomy {total, counts, share, examples, excluding_initial}
  mitigation   (only with `sysq detect --mitigate PLAN`; sysq/mitigate/compare.py) plan, recipe, bits,
               summary {before, after: largest, largest_linear, median, largest_over_median, resid_max},
               layers[{layer, resid_before/after, resid_channel_before/after, resid_pos_before/after,
               down_in_before/after}], scales {linear: {layer, role, before, after, channel_before/after}}
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SysqError

SCHEMA = "sysq.outliers/1"
CHANNEL_ARRAYS = ("channel_absmax", "channel_absmean")   # numpy arrays in memory, lists in report.json


def _plain(obj):
    """obj with numpy arrays turned into lists (dicts and lists copied on the way)."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


@dataclass
class OutlierReport:
    model: dict
    data: dict
    thresholds: dict
    summary: dict
    activation: dict          # {"sites": [site summaries], "residual_channels": [...]}
    linear_inputs: dict       # linear name -> its input site summary (shared by q/k/v, by gate/up)
    weights: dict             # linear name -> weight column statistics
    attention: dict
    consistency: dict         # {"feature": ..., "sequence": ...}
    lifecycle: list
    tokens: dict
    cost: dict = field(default_factory=dict)
    mitigation: dict | None = None   # before/after panel (sysq detect --mitigate)
    schema: str = SCHEMA
    arrays: dict = field(default_factory=dict, repr=False)   # plot data only, not in report.json

    # ---- queries (used by mitigation) --------------------------------------------------------
    def sites(self, site: str | None = None, layer: int | None = None) -> list[dict]:
        return [s for s in self.activation["sites"]
                if (site is None or s["site"] == site) and (layer is None or s["layer"] == layer)]

    def outlier_channels(self, layer: int | None = None, site: str = "resid") -> dict[int, list[int]] | list[int]:
        """Massive channels at `site` ("resid", "attn_in", "o_in", "mlp_in", "down_in"): {layer: [channels]},
        or the list for one layer."""
        out = {s["layer"]: [m["channel"] for m in s["massive_channels"]] for s in self.sites(site)}
        return out.get(layer, []) if layer is not None else out

    def outlier_tokens(self) -> list[dict]:
        """Outlier tokens (PrefixQuant criterion at any linear input or residual): token_id, token, type,
        count, positions, layers."""
        return self.tokens["tokens"]

    def linear_input_stats(self, name: str) -> dict:
        """The input statistics one linear sees: absmax and where it is set (token, channel), channel_absmax,
        massive_channels, int8_channels, outlier_tokens, suggested_token_max_threshold."""
        if name not in self.linear_inputs:
            raise SysqError(f"no linear named {name!r} in this report; known e.g. {sorted(self.linear_inputs)[:3]}")
        return self.linear_inputs[name]

    def down_outlier_columns(self, layer: int | None = None) -> dict[int, list[int]] | list[int]:
        out = {w["layer"]: w["outlier_columns"] for w in self.weights.values() if w["role"] in ("down", "fc2")}
        return out.get(layer, []) if layer is not None else out

    def token_max_threshold(self, name: str | None = None) -> float:
        """Suggested preserve-token threshold on a token's max |x|: 64 x the median token max of that
        linear's input (the smallest over all linear inputs when name is None)."""
        if name is not None:
            return self.linear_input_stats(name)["suggested_token_max_threshold"]
        return min(s["suggested_token_max_threshold"] for s in self.linear_inputs.values())

    def headline(self) -> str:
        from .markdown import headline
        return headline(self)

    # ---- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain Python (lists, not arrays): what report.json holds."""
        return {"schema": self.schema, "model": self.model, "data": self.data, "thresholds": self.thresholds,
                "summary": self.summary, "activation": _plain(self.activation), "linear_inputs": _plain(self.linear_inputs),
                "weights": self.weights, "attention": self.attention, "consistency": self.consistency,
                "lifecycle": self.lifecycle, "tokens": self.tokens, "cost": self.cost,
                **({"mitigation": self.mitigation} if self.mitigation else {})}

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=True)

    @classmethod
    def from_dict(cls, d: dict) -> "OutlierReport":
        schema = d.get("schema", "")
        if not schema.startswith("sysq.outliers/"):
            raise SysqError(f"not a sysq outlier report (schema {schema!r}); make one with `sysq detect`")
        if schema != SCHEMA:
            raise SysqError(f"report schema {schema!r} is not {SCHEMA!r}; rerun `sysq detect` with this sysq")
        keys = ("model", "data", "thresholds", "summary", "activation", "linear_inputs", "weights", "attention",
                "consistency", "lifecycle", "tokens")
        for site in d["activation"]["sites"] + list(d["linear_inputs"].values()):
            for key in CHANNEL_ARRAYS:
                site[key] = np.asarray(site[key], dtype=np.float64)
        return cls(**{k: d[k] for k in keys}, cost=d.get("cost", {}), mitigation=d.get("mitigation"),
                   schema=schema)

    @classmethod
    def load(cls, path) -> "OutlierReport":
        p = Path(path)
        if p.is_dir():
            p = p / "report.json"
        if not p.exists():
            raise SysqError(f"no outlier report at {p}; run `sysq detect --out {p.parent}` first")
        try:
            d = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SysqError(f"{p} is not a JSON outlier report ({e}); pass the report.json `sysq detect` wrote") from e
        return cls.from_dict(d)

    def save(self, out_dir, plots: bool = True) -> Path:
        """Write report.json, report.md and plots/*.png into out_dir, atomically (temp dir, then rename)."""
        from ..plots import make_plots
        from .markdown import render

        out = Path(out_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            (tmp / "report.json").write_text(self.to_json())
            names = make_plots(self, tmp / "plots") if plots else []
            (tmp / "report.md").write_text(render(self, names))
            old = None
            if out.exists():
                old = out.parent / f".{out.name}.old-{os.getpid()}"
                os.replace(out, old)
            os.replace(tmp, out)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out
