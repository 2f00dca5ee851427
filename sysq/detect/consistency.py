"""Consistency between the three kinds of outliers (the paper's Table 1), both ways.

Feature dimension, per layer: A = down_proj-input activation-outlier channels (massive at down_in),
W = down_proj weight-outlier columns. act->weight = |A & W| / |A|, weight->act = |A & W| / |W|.
Counting unit: (layer, channel) pairs. The alignment also checks that the row where each of those
columns is largest is a residual-stream outlier channel of the layer's input or output (massive, or above
massive_abs: the early layers build the outlier before it reaches 1000x the median; a vanishing layer's
column cancels the input's outlier).

Sequence dimension, per layer i: A = activation-outlier tokens of layer i's input residual (massive),
B = attention-outlier keys of layer i. act->attn = |A & B| / |A|, attn->act = |A & B| / |B|.
Counting unit: (window, position) token slots.
"""
from __future__ import annotations


def _share(both: int, n: int):
    return both / n if n else None


def feature_consistency(sites: dict, weights: dict) -> dict:
    per_layer, na = [], [0, 0, 0]
    for (layer, site), s in sorted(sites.items()):
        if site != "down_in":
            continue
        lin = s["linears"][0]
        act = {m["channel"] for m in s["massive_channels"]}
        w = weights[lin]
        wcols = set(w["outlier_columns"])
        rows = dict(zip(w["outlier_columns"], w["outlier_rows"]))
        resid = set()       # the layer's input (a cancelling column) or output (a building column)
        for r in (sites.get((layer - 1, "resid"), {}), sites.get((layer, "resid"), {})):
            resid |= {m["channel"] for m in r.get("massive_channels", [])} | set(r.get("large_channels", []))
        both = act & wcols
        row_hits = [rows[j] for j in sorted(both)]
        per_layer.append({"layer": layer, "linear": lin, "activation_channels": sorted(act),
                          "weight_columns": sorted(wcols), "both": sorted(both),
                          "act_to_weight": _share(len(both), len(act)), "weight_to_act": _share(len(both), len(wcols)),
                          "largest_rows": row_hits, "rows_in_residual_outliers": [r in resid for r in row_hits]})
        na[0] += len(act)
        na[1] += len(wcols)
        na[2] += len(both)
    return {"unit": "(layer, channel) pairs at down_proj input", "layers": per_layer,
            "activation": na[0], "weight": na[1], "both": na[2],
            "act_to_weight": _share(na[2], na[0]), "weight_to_act": _share(na[2], na[1])}


def sequence_consistency(seq: list[list[int]]) -> dict:
    per_layer, tot = [], [0, 0, 0]
    for i, (a, b, both) in enumerate(seq):
        per_layer.append({"layer": i, "activation": a, "attention": b, "both": both,
                          "act_to_attn": _share(both, a), "attn_to_act": _share(both, b)})
        tot = [tot[0] + a, tot[1] + b, tot[2] + both]
    return {"unit": "(window, position) token slots; activation = massive tokens of the layer's input residual, "
                    "attention = keys receiving >= share x T mass in that layer",
            "layers": per_layer, "activation": tot[0], "attention": tot[1], "both": tot[2],
            "act_to_attn": _share(tot[2], tot[0]), "attn_to_act": _share(tot[2], tot[1])}
