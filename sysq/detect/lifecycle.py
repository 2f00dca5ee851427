"""Lifecycle of the dominant residual outlier channels: where each is born (first > massive_abs) and
amplified (at least doubles), what builds
it there (attention vs MLP, gate, up, act(gate)*up and the top terms x_k * W_down[c, k]), and where it
vanishes (the MLP writes the opposite sign: cancellation ratio = -mlp / h_in, 1 = fully cancelled).
Followed separately at the initial token ("initial") and at the other positions ("other": delimiters...)."""
from __future__ import annotations


from ..capture import LayerLife, to_host

MAX_CHANNELS = 4


def _mean(total: float, n: int):
    return total / n if n else None


def down_rows(down_weights: list, life: list[LayerLife], channels: list[int]) -> dict:
    """The rows W_down[c] (float32 numpy, on the host) that the lifecycle's terms read: for each layer where one
    of `channels` is born, amplified or cancelled. One gather per such layer and one copy in all."""
    want = {i: sorted({c for c, _ in list(ll.emerge) + list(ll.cancel) if c in channels})
            for i, ll in enumerate(life)}
    want = {i: cs for i, cs in want.items() if cs}
    rows = to_host([down_weights[i].detach()[cs].float() for i, cs in want.items()], numpy=True)
    return {(i, c): r for (i, cs), block in zip(want.items(), rows) for c, r in zip(cs, block)}


def channel_lifecycle(c: int, group: str, life: list[LayerLife], resid_absmax: list[list[float]], massive_layers: list[int],
                      down_rows: dict, down_outlier_cols: list[set], down_act_channels: list[set]) -> dict:
    """down_rows: down_rows()'s {(layer, channel): W_down[channel]} for the layers where c is born or cancelled."""
    per_layer, births, vanish = [], [], []
    for i, ll in enumerate(life):
        tr = ll.track.get((c, group))
        row = {"layer": i, "resid_absmax": float(resid_absmax[i][c])}
        if tr and tr[0]:
            n = tr[0]
            row.update(tracked=n, h_in=tr[1] / n, attn=tr[2] / n, mlp=tr[3] / n, h_out=tr[4] / n,
                       mlp_opposite_share=tr[5] / n)
            if tr[6]:
                h_in = tr[1] / n
                vanish.append({"layer": i, "positions": tr[6], "h_in": h_in, "h_out": tr[4] / n,
                               "attn": tr[2] / n, "mlp": tr[3] / n, "mlp_opposite_share": tr[5] / n,
                               "cancellation_ratio": -(tr[3] / n) / h_in if h_in else None})
        per_layer.append(row)
        e = ll.emerge.get((c, group))
        if e:
            births.append({"layer": i, "positions": e["count"], "attn": e["attn"] / e["count"],
                           "mlp": e["mlp"] / e["count"],
                           "builder": "mlp" if abs(e["mlp"]) >= abs(e["attn"]) else "attention",
                           "terms": _terms(e, down_rows[(i, c)], down_outlier_cols[i], down_act_channels[i])})
        k = ll.cancel.get((c, group))
        if k and vanish and vanish[-1]["layer"] == i:
            vanish[-1]["terms"] = _terms(k, down_rows[(i, c)], down_outlier_cols[i], down_act_channels[i])
    # born: the first layer that makes it large (|h| > massive_abs); Sun et al.'s massive test may pass later,
    # once the value also reaches 1000x the median (massive_layers)
    emergence = births[0] if births else None
    return {"channel": c, "tokens": group, "emergence_layer": emergence["layer"] if emergence else None, "emergence": emergence,
            "amplifications": births[1:], "massive_layers": massive_layers, "vanishing": vanish, "layers": per_layer}


def groups_of(c: int, life: list[LayerLife]) -> list[str]:
    """The token groups ("initial", "other") where channel c was ever tracked."""
    return [g for g in ("initial", "other") if any((c, g) in ll.track for ll in life)]


def _terms(e: dict, w_row, outlier_cols: set, act_channels: set) -> list[dict]:
    """The largest terms x_k * W_down[c, k] (means over the positions where k was among the largest); w_row:
    W_down[c] on the host."""
    parts = sorted(e["parts"].items(), key=lambda kv: -abs(kv[1][1] / kv[1][0]))
    return [{"column": k, "times_top": p[0], "contribution": p[1] / p[0], "x": p[2] / p[0], "gate": p[3] / p[0],
             "up": p[4] / p[0], "w_down": float(w_row[k]), "weight_outlier_column": k in outlier_cols,
             "activation_outlier_channel": k in act_channels} for k, p in parts[:4]]
