"""report.md: a human summary of an OutlierReport (a few tables, one paragraph per finding)."""
from __future__ import annotations

import yaml


def _f(v, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _tok(s: str) -> str:
    return "`" + s.replace("\n", "\\n").replace("`", "'").replace("|", "\\|") + "`"


def _layers(ls: list[int]) -> str:
    """[1,2,3,5] -> '1-3, 5'"""
    if not ls:
        return "none"
    out, start, prev = [], ls[0], ls[0]
    for x in ls[1:] + [None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if x is not None:
            start = prev = x
    return ", ".join(out)


def render(r, plots: list[str]) -> str:
    s, d, m = r.summary, r.data, r.model
    L = []
    add = L.append
    add(f"# Systematic outliers: {m.get('name') or m['family']}\n")
    add(f"{m['family']} ({m['model_type']}), {m['layers']} layers, hidden {m['hidden_size']}, {m['heads']} heads "
        f"({m['kv_heads']} kv), {m['dtype']}. Data: {d.get('dataset')}, {d.get('windows')} windows x "
        f"{d.get('seqlen')} tokens, BOS {d.get('bos')!r}, seed {d.get('seed')}. Schema `{r.schema}`.\n")
    add("Thresholds: " + ", ".join(f"{k}={v}" for k, v in r.thresholds.items()) + "\n")

    add("## Headline\n")
    add(headline(r))
    tx = r.tokens.get("taxonomy") or {}
    add("## Activation outliers: residual stream per layer\n")
    add("| layer | max abs | channel | token (pos) | median abs | top-1/2/3 (mean over windows) | massive channels | massive tokens |")
    add("|---|---|---|---|---|---|---|---|")
    for site in r.sites("resid"):
        a = site["absmax_at"]
        top3 = "/".join(_f(v) for v in site.get("top3_mean", []))
        add(f"| {site['layer']} | {_f(site['absmax'])} | {a['channel']} | {_tok(a['token'])} ({a['pos']}) | "
            f"{_f(site['median_abs'])} | {top3} | {[c['channel'] for c in site['massive_channels']][:6]} | "
            f"{site['hits']['massive']} |")
    add("")

    add("## Linear inputs with massive channels\n")
    add("| layer | site | max abs | channel | token (pos) | median abs | massive channels | suggested token-max threshold |")
    add("|---|---|---|---|---|---|---|---|")
    for site in r.activation["sites"]:
        if site["site"] == "resid" or not site["massive_channels"]:
            continue
        a = site["absmax_at"]
        add(f"| {site['layer']} | {site['site']} | {_f(site['absmax'])} | {a['channel']} | {_tok(a['token'])} ({a['pos']}) | "
            f"{_f(site['median_abs'])} | {[c['channel'] for c in site['massive_channels']][:6]} | "
            f"{_f(site['suggested_token_max_threshold'])} |")
    add("")

    add("## Weight outliers and alignment (down_proj)\n")
    add("| layer | activation channels (down input) | weight-outlier columns | both | largest row of each | row is a residual outlier |")
    add("|---|---|---|---|---|---|")
    for row in r.consistency["feature"]["layers"]:
        if row["activation_channels"] or row["weight_columns"]:
            add(f"| {row['layer']} | {row['activation_channels']} | {row['weight_columns'][:8]} | {row['both']} | "
                f"{row['largest_rows']} | {row['rows_in_residual_outliers']} |")
    add("")

    if r.attention.get("layers"):
        add("## Attention outliers\n")
        add(f"From the first {r.attention.get('windows')} windows (eager attention).\n")
        add("| layer | outlier keys | top positions | top tokens | sink heads (share > eps) | mass to position 0 / T | "
            "Q/K/V norm ratio at outlier tokens |")
        add("|---|---|---|---|---|---|---|")
        for a in r.attention["layers"]:
            ratio = a["qkv_norms"].get("ratio", {}) if a["qkv_norms"] else {}
            add(f"| {a['layer']} | {a['outlier_keys']} | {[p['pos'] for p in a['outlier_positions'][:4]]} | "
                f"{', '.join(_tok(t['token']) for t in a['outlier_tokens'][:3])} | {len(a['sink_heads'])}/{len(a['sink_share'])} | "
                f"{_f(a['mass_to_first'])} | {'/'.join(_f(ratio.get(k)) for k in 'qkv') if ratio else 'n/a'} |")
        add("")

    if "sequence" in r.consistency:
        add("## Consistency per layer (sequence dimension)\n")
        add("| layer | activation tokens | attention keys | both | act->attn | attn->act |")
        add("|---|---|---|---|---|---|")
        for row in r.consistency["sequence"]["layers"]:
            add(f"| {row['layer']} | {row['activation']} | {row['attention']} | {row['both']} | "
                f"{_pct(row['act_to_attn'])} | {_pct(row['attn_to_act'])} |")
        add("")

    add("## Lifecycle\n")
    for life in r.lifecycle:
        add(f"### Channel {life['channel']}, {life['tokens']} token{'' if life['tokens'] == 'initial' else 's'}\n")
        e = life["emergence"]
        if e:
            add(f"Born in layer {e['layer']} ({e['positions']} position(s)): attention wrote {_f(e['attn'])}, the MLP "
                f"{_f(e['mlp'])} ({e['builder']} builds it). Largest terms x_k * W_down[{life['channel']}, k]:\n")
            _terms(add, e["terms"])
        for a in life["amplifications"]:
            add(f"Amplified in layer {a['layer']}: attention {_f(a['attn'])}, MLP {_f(a['mlp'])}.\n")
            _terms(add, a["terms"])
        for v in life["vanishing"]:
            add(f"Vanishes in layer {v['layer']}: h_in {_f(v['h_in'])} -> h_out {_f(v['h_out'])}; MLP wrote {_f(v['mlp'])} "
                f"(opposite sign at {_pct(v['mlp_opposite_share'])} of positions, cancellation ratio "
                f"{_f(v['cancellation_ratio'])}), attention {_f(v['attn'])}.\n")
            if v.get("terms"):
                _terms(add, v["terms"])
        add("")

    if tx:
        add("## Token taxonomy of outlier tokens\n")
        add("| type | count | share | examples |")
        add("|---|---|---|---|")
        for t, n in tx["counts"].items():
            ex = ", ".join(f"{_tok(e['token'])} ({e['count']})" for e in tx["examples"][t][:4])
            add(f"| {t} | {n} | {_pct(tx['share'][t])} | {ex} |")
        add("\nWithout the initial token: " + ", ".join(f"{k} {v}" for k, v in tx["excluding_initial"].items()) + ".\n")

    if r.mitigation:
        _mitigation(add, r.mitigation)

    if plots:
        add("## Plots\n")
        for p in plots:
            add(f"![{p}](plots/{p})")
        add("")
    c = r.cost
    if c:
        add(f"Cost: detection pass {_f(c.get('pass_s'))} s (batch {c.get('batch_size')}, eager attention on the first "
            f"{c.get('attention_windows')} windows), weight statistics {_f(c.get('weights_s'))} s.\n")
    return "\n".join(L)


def _mitigation(add, mg: dict) -> None:
    """The before/after panel of `sysq detect --mitigate`."""
    b, a = mg["summary"]["before"], mg["summary"]["after"]
    add(f"## Before / after mitigation: plan `{mg['plan']['method']}` for `{mg['recipe']}`\n")
    add("The same windows through the float model and the mitigated one (float, not quantized). Static scale = "
        f"the per-tensor INT{mg['bits']} scale a quantizer calibrates on these windows (absmax / "
        f"{2 ** (mg['bits'] - 1) - 1}); after mitigation the tokens the plan preserves are left out of it.\n")
    add("| | before | after |")
    add("|---|---|---|")
    add(f"| residual max abs | {_f(b['resid_max'])} | {_f(a['resid_max'])} |")
    add(f"| largest static scale (linear) | {_f(b['largest'])} ({b['largest_linear']}) | "
        f"{_f(a['largest'])} ({a['largest_linear']}) |")
    add(f"| median static scale | {_f(b['median'])} | {_f(a['median'])} |")
    add(f"| largest / median | {_f(b['largest_over_median'])} | {_f(a['largest_over_median'])} |")
    add("")
    add("| layer | resid max before (ch, pos) | after (ch, pos) | down_proj in max before | after |")
    add("|---:|---|---|---:|---:|")
    for l in mg["layers"]:
        add(f"| {l['layer']} | {_f(l['resid_before'])} ({l['resid_channel_before']}, {l['resid_pos_before']}) | "
            f"{_f(l['resid_after'])} ({l['resid_channel_after']}, {l['resid_pos_after']}) | "
            f"{_f(l['down_in_before'])} | {_f(l['down_in_after'])} |")
    add("")
    top = sorted(mg["scales"].items(), key=lambda kv: -kv[1]["before"])[:10]
    add("Linears with the largest static scales before mitigation:\n")
    add("| linear | scale before (channel) | after (channel) |")
    add("|---|---:|---:|")
    for n, s in top:
        add(f"| {n} | {_f(s['before'])} ({s['channel_before']}) | {_f(s['after'])} ({s['channel_after']}) |")
    add("\nThe plan (also in plan.yaml beside this report):\n")
    add("```yaml")
    add(yaml.safe_dump(_short(mg["plan"]), sort_keys=False, default_flow_style=None, width=110).rstrip())
    add("```\n")


def _short(d):
    """The plan with its long per-linear mappings (chosen ratios, channels, floors) replaced by their size."""
    if isinstance(d, dict):
        if len(d) > 8 and all(isinstance(k, str) and "." in k for k in d):
            return f"<{len(d)} entries, see plan.yaml>"
        return {k: _short(v) for k, v in d.items()}
    return d


def _terms(add, terms: list[dict]) -> None:
    add("| column k | x_k (down input) | gate | up | W_down | contribution | weight-outlier column | activation-outlier channel |")
    add("|---|---|---|---|---|---|---|---|")
    for t in terms:
        add(f"| {t['column']} | {_f(t['x'])} | {_f(t['gate'])} | {_f(t['up'])} | {_f(t['w_down'])} | "
            f"{_f(t['contribution'])} | {t['weight_outlier_column']} | {t['activation_outlier_channel']} |")
    add("")


def headline(r) -> str:
    """The headline findings, a few lines (printed by `sysq detect`, first section of report.md)."""
    s, m = r.summary, r.model
    L = []
    add = L.append
    chans = r.activation["residual_channels"]
    if not chans:
        add("No massive residual-stream activation (|x| > massive_abs and >= massive_rel x median) in any layer.\n")
    for c in chans[:3]:
        add(f"- Residual channel **{c['channel']}**: max |x| = {_f(c['absmax'])} (signed {_f(c['value'])}) at layer "
            f"{c['at_layer']} on token {_tok(c['token'])} (position {c['pos']}); massive in layers "
            f"{_layers(c['layers'])} ({len(c['layers'])} of {m['layers']}){', persistent' if c['persistent'] else ''}.")
    add("")
    amp = "; ".join(f"layer {a['layer']} (outlier columns {a['columns']})" for a in s["amplification_columns"]) or "none"
    add(f"- Dominant channel born (first |h| > {r.thresholds['massive_abs']}) in layer {_f(s['emergence_layer'])}, "
        f"built by down_proj columns {s['emergence_columns']}; amplified (x2 or more) in {amp}; "
        f"massive (Sun et al.) in layers {_layers(s['massive_layers'])}; vanishing in layers "
        f"{_layers(s['vanishing_layers'])}.")
    add(f"- Feature-dimension consistency (down_proj input outlier channels that are weight-outlier columns): "
        f"{_pct(s['feature_consistency'])}, reverse {_pct(s['feature_consistency_reverse'])} "
        f"[unit: {r.consistency['feature']['unit']}].")
    if "sequence" in r.consistency:
        add(f"- Sequence-dimension consistency (activation-outlier tokens that are attention-outlier keys): "
            f"{_pct(s['sequence_consistency'])}, reverse {_pct(s['sequence_consistency_reverse'])} "
            f"[unit: {r.consistency['sequence']['unit']}].")
    add(f"- Sink_eps (eps={r.thresholds['sink_eps']}): {_pct(s['sink_eps'])} of heads.")
    tx = (r.tokens.get("taxonomy") or {})
    if tx:
        add("- Outlier tokens by type (" + r.tokens["unit"] + "): " +
            ", ".join(f"{k} {_pct(v)}" for k, v in tx["share"].items()) + ".")
    add("")

    return "\n".join(L)
