"""OutlierReport: everything detect() found, as JSON (schema "sysq.outliers/1"), Markdown and plots.

Mitigation reads it through a small API: outlier_channels(), outlier_tokens(), linear_input_stats(),
down_outlier_columns(), token_max_threshold()."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SysqError

SCHEMA = "sysq.outliers/1"


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
        return {"schema": self.schema, "model": self.model, "data": self.data, "thresholds": self.thresholds,
                "summary": self.summary, "activation": self.activation, "linear_inputs": self.linear_inputs,
                "weights": self.weights, "attention": self.attention, "consistency": self.consistency,
                "lifecycle": self.lifecycle, "tokens": self.tokens, "cost": self.cost}

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
        return cls(**{k: d[k] for k in keys}, cost=d.get("cost", {}), schema=schema)

    @classmethod
    def load(cls, path) -> "OutlierReport":
        p = Path(path)
        if p.is_dir():
            p = p / "report.json"
        if not p.exists():
            raise SysqError(f"no outlier report at {p}; run `sysq detect --out {p.parent}` first")
        return cls.from_dict(json.loads(p.read_text()))

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
