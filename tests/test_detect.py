"""detect() on tiny llamas with planted systematic outliers: ground truth is known by construction.

Plant: the BOS embedding alone carries channel C_IN (every other token has 0 there, no layer writes it).
In layer BORN the MLP has one intermediate unit K reading only C_IN (gate and up), and down_proj column
K writes only residual channel D: so BOS gets a massive value in D, built by column K. In layer DIES a
second unit K2 reads D and its down_proj column writes exactly -h[D]: the outlier vanishes there.
"""
import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sysq.capture import MAX_EXAMPLES, Recorder
from sysq.detect import OutlierReport, Thresholds, detect
from sysq.errors import NonFiniteError, SysqError

BOS, C_IN, D, K, K2, BORN, DIES, LAYERS = 1, 3, 7, 10, 20, 1, 3, 5


def tiny(seed=0, layers=LAYERS, vocab=64):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, bos_token_id=BOS,
                      attn_implementation="sdpa")
    return LlamaForCausalLM(cfg).eval()


def planted(seed=0, vocab=64):
    model = tiny(seed, vocab=vocab)
    m = model.model
    with torch.no_grad():
        m.embed_tokens.weight[:, [C_IN, D]] = 0
        m.embed_tokens.weight[BOS, C_IN] = 30.0
        for layer in m.layers:                          # nothing writes C_IN or D except the planted columns
            for lin in (layer.self_attn.o_proj, layer.mlp.down_proj):
                lin.weight[C_IN] = 0
                lin.weight[D] = 0
        mlp = m.layers[BORN].mlp
        for lin in (mlp.gate_proj, mlp.up_proj):
            lin.weight[K] = 0
            lin.weight[K, C_IN] = 4.0
        mlp.down_proj.weight[:, K] = 0
        mlp.down_proj.weight[D, K] = 1.0
        mlp = m.layers[DIES].mlp
        for lin in (mlp.gate_proj, mlp.up_proj):
            lin.weight[K2] = 0
            lin.weight[K2, D] = 4.0
        mlp.down_proj.weight[:, K2] = 0
        # measure what reaches layer DIES, then make column K2 write exactly -h[D] at BOS
        box = {}
        hooks = [m.layers[DIES].register_forward_pre_hook(lambda mod, a, kw: box.__setitem__("h", (a or (kw["hidden_states"],))[0]), with_kwargs=True),
                 mlp.down_proj.register_forward_pre_hook(lambda mod, a: box.__setitem__("x", a[0]))]
        model(torch.tensor([[BOS, 5, 6, 7]]))
        for h in hooks:
            h.remove()
        mlp.down_proj.weight[D, K2] = -box["h"][0, 0, D] / box["x"][0, 0, K2]
    return model


def ids(n=4, T=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(2, 64, (n, T), generator=g)
    x[:, 0] = BOS
    return x


@pytest.fixture(scope="module")
def report():
    return detect(planted(), ids(), quiet=True)


def test_planted_channel_layers_and_token(report):
    resid = report.outlier_channels(site="resid")
    assert {i: c for i, c in resid.items() if c} == {i: [D] for i in range(BORN, DIES)}
    chans = report.activation["residual_channels"]
    assert [c["channel"] for c in chans] == [D]
    assert chans[0]["pos"] == 0
    for site in report.sites("resid"):
        for rec in site["outlier_tokens"].get("massive", {}).get("positions", []):
            assert rec["pos"] == 0


def test_planted_down_input_and_columns(report):
    down_in = {i: c for i, c in report.outlier_channels(site="down_in").items() if c}
    assert down_in == {BORN: [K], DIES: [K2]}
    cols = {i: c for i, c in report.down_outlier_columns().items() if c}
    assert cols == {BORN: [K], DIES: [K2]}
    w = report.weights[f"model.layers.{BORN}.mlp.down_proj"]
    assert w["top_columns"][0]["column"] == K and w["top_columns"][0]["rows"][0] == D
    feat = report.consistency["feature"]
    assert feat["act_to_weight"] == 1.0 and feat["weight_to_act"] == 1.0
    row = next(r for r in feat["layers"] if r["layer"] == BORN)
    assert row["largest_rows"] == [D] and row["rows_in_residual_outliers"] == [True]


def test_planted_lifecycle(report):
    life = report.lifecycle[0]
    assert life["channel"] == D and life["emergence_layer"] == BORN
    e = life["emergence"]
    assert e["builder"] == "mlp" and e["terms"][0]["column"] == K
    assert e["terms"][0]["weight_outlier_column"] and e["terms"][0]["activation_outlier_channel"]
    assert [v["layer"] for v in life["vanishing"]] == [DIES]
    v = life["vanishing"][0]
    assert v["mlp_opposite_share"] == 1.0
    assert v["cancellation_ratio"] == pytest.approx(1.0, abs=0.05)
    assert v["terms"][0]["column"] == K2 and v["terms"][0]["weight_outlier_column"]
    assert report.summary["vanishing_layers"] == [DIES]


def test_linear_input_api(report):
    s = report.linear_input_stats(f"model.layers.{BORN}.mlp.down_proj")
    assert s["absmax_at"]["channel"] == K and s["absmax_at"]["pos"] == 0
    assert max(range(len(s["channel_absmax"])), key=s["channel_absmax"].__getitem__) == K
    assert report.linear_input_stats(f"model.layers.{BORN}.self_attn.q_proj") is \
        report.linear_input_stats(f"model.layers.{BORN}.self_attn.k_proj")
    toks = report.outlier_tokens()
    assert toks and all(t["type"] == "initial" for t in toks) and toks[0]["token_id"] == BOS
    assert report.token_max_threshold() > 0
    with pytest.raises(SysqError):
        report.linear_input_stats("nope")


def test_clean_model_has_no_outliers():
    r = detect(tiny(), ids(), quiet=True)
    assert all(not c for c in r.outlier_channels(site="resid").values())
    for site in ("attn_in", "o_in", "mlp_in", "down_in"):
        assert all(not c for c in r.outlier_channels(site=site).values()), site
    assert all(not c for c in r.down_outlier_columns().values())
    assert r.activation["residual_channels"] == [] and r.lifecycle == []
    assert r.consistency["feature"]["act_to_weight"] is None


def test_attention_mass_matches_eager_probabilities():
    model, x = planted(), ids(n=2, T=16)
    rec = Recorder(model, Thresholds())
    model.set_attn_implementation("eager")
    with torch.no_grad():
        ref = model(x, output_attentions=True).attentions
    rec.attach()
    rec.run(x, 0)
    rec.detach()
    model.set_attn_implementation("sdpa")
    for i, w in enumerate(ref):
        sink = w[..., 0].mean(-1).sum(0).double()            # [H], summed over windows
        assert torch.allclose(rec.attn[i].sink_sum, sink, atol=1e-5)
        recv = w.sum(2).mean(1)                                # [B, T]
        flags = recv >= 0.1 * x.shape[1]
        assert rec.attn[i].outliers.count == int(flags.sum())


def test_attention_implementation_restored():
    model = planted()
    detect(model, ids(n=2), quiet=True)
    assert model.config._attn_implementation == "sdpa"


def test_nonfinite_names_layer_and_module():
    model = planted()
    with torch.no_grad():
        model.model.layers[2].mlp.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"layer 2 down_in .*down_proj"):
        detect(model, ids(n=2), quiet=True)


def _kept_tensors(rec: Recorder) -> int:
    n = sum(v.numel() for t in rec.tables.values() for v in t.state.values())
    return n + sum(a.sink_sum.numel() + (a.attn_map.numel() if a.attn_map is not None else 0) for a in rec.attn)


def _containers_bounded(rec: Recorder, vocab: int, T: int, th: Thresholds) -> bool:
    """Every kept container is bounded by the vocabulary, the window length, the channels or a constant."""
    hits = [h for s in rec.sites.values() for h in s.hits.values()] + [a.outliers for a in rec.attn]
    ok = all(len(h.ids) <= vocab and len(h.initial_ids) <= vocab and len(h.positions) <= T
             and len(h.examples) <= MAX_EXAMPLES for h in hits)
    ok &= all(len(s.top.items) <= th.top_k for s in rec.sites.values())
    ok &= all(len(life.track) <= 64 and len(life.tokens) <= vocab and len(life.emerge) <= 64 for life in rec.life)
    return ok


def test_kept_state_does_not_grow_with_windows():
    model, th = planted(), Thresholds()
    kept = []
    for n in (2, 16):
        rec = Recorder(model, th).attach()
        model.set_attn_implementation("eager")
        for start in range(0, n, 2):
            rec.run(ids(n=2, seed=start), start)
        rec.detach()
        model.set_attn_implementation("sdpa")
        kept.append(_kept_tensors(rec))
        assert _containers_bounded(rec, vocab=64, T=24, th=th)
    assert kept[0] == kept[1]


def test_deterministic_and_saved_atomically(tmp_path):
    model = planted()
    a = detect(model, ids(), quiet=True)
    b = detect(model, ids(), quiet=True)
    da, db = a.to_dict(), b.to_dict()
    da.pop("cost"), db.pop("cost")
    assert json.dumps(da) == json.dumps(db)
    out = a.save(tmp_path / "det")
    assert sorted(p.name for p in out.iterdir()) == ["plots", "report.json", "report.md"]
    assert json.loads((out / "report.json").read_text())["schema"] == "sysq.outliers/1"
    assert (out / "plots" / "lifecycle.png").stat().st_size > 0
    assert "Thresholds: massive_abs=100.0" in (out / "report.md").read_text()
    a.save(tmp_path / "det", plots=False)                      # overwrite in place, no leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det"]
    again = OutlierReport.load(out)
    assert again.outlier_channels(site="down_in") == a.outlier_channels(site="down_in")


def test_bad_thresholds_and_inputs():
    with pytest.raises(SysqError, match="unknown threshold"):
        Thresholds.from_dict({"massive": 3})
    with pytest.raises(SysqError):
        detect(planted(), [1, 2, 3], quiet=True)


def test_attention_statistics_on_the_first_windows_only():
    r = detect(planted(), ids(n=6), quiet=True, attention_windows=2, snapshot=False)
    assert r.attention["windows"] == 2
    assert all(s["windows"] == 6 for s in r.sites("resid"))
    seq = r.consistency["sequence"]["layers"][BORN + 1]
    assert seq["activation"] == 2                      # the BOS of the 2 attention windows, not of all 6


def test_cli_detect_on_a_tiny_folder(tmp_path, tiny_tokenizer, capsys):
    from sysq.cli import main
    folder, text = tmp_path / "tiny", tmp_path / "text.txt"
    model = planted(vocab=len(tiny_tokenizer))
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    text.write_text("The tower is 324 metres tall , about the same height as an 81 storey building .\n" * 20)
    ids_in_vocab = tiny_tokenizer(text.read_text())["input_ids"]
    assert max(ids_in_vocab) < len(tiny_tokenizer) and tiny_tokenizer.bos_token_id == BOS
    out = tmp_path / "det"
    rc = main(["detect", "--model", str(folder), "--data", str(text), "--n", "2", "--seqlen", "16", "--out", str(out),
               "--quiet", "--no-plots"])
    assert rc == 0 and (out / "report.json").exists() and "Residual channel" in capsys.readouterr().out
    assert main(["detect", "--model", str(folder), "--data", str(text), "--threshold", "nope=1", "--quiet"]) == 2

    # --mitigate: the plan applied, detect again, the before/after panel in the report, OUT/after and plan.yaml
    out2 = tmp_path / "det2"
    rc = main(["detect", "--model", str(folder), "--data", str(text), "--n", "2", "--seqlen", "16", "--out", str(out2),
               "--quiet", "--no-plots", "--mitigate", "smooth+preserve-tokens", "--calib-n", "2"])
    printed = capsys.readouterr().out
    assert rc == 0 and "after plan 'smooth+preserve-tokens' (w8a8-static)" in printed
    assert "Before / after mitigation" in (out2 / "report.md").read_text()
    assert (out2 / "after" / "report.json").exists()
    from sysq.mitigate.plan import MitigationPlan
    p = MitigationPlan.load(out2 / "plan.yaml")
    assert p.smooth.chosen and p.preserve_tokens is not None          # what the searches chose is recorded
    rc = main(["detect", "--model", str(folder), "--data", str(text), "--n", "2", "--seqlen", "16", "--quiet",
               "--out", str(tmp_path / "det3"), "--mitigate", "smooth+magic"])
    assert rc == 2 and "unknown mitigation method" in capsys.readouterr().err
    assert not (tmp_path / "det3").exists()                          # nothing half-written


@pytest.mark.parametrize("model_type", ["gpt2", "opt", "phi3", "qwen3", "gemma2"])
def test_every_family_streams(model_type):
    """Fused qkv / gate_up, fc1-fc2 MLPs and sandwich norms: every site and the attention hook report."""
    from tiny_models import tiny_model
    model = tiny_model(model_type, layers=2)
    x = torch.randint(3, 300, (2, 12))
    x[:, 0] = 1
    r = detect(model, x, quiet=True, snapshot=False)
    assert {(s["layer"], s["site"]) for s in r.activation["sites"]} == \
        {(i, site) for i in range(2) for site in ("attn_in", "o_in", "mlp_in", "down_in", "resid")}
    assert len(r.linear_inputs) == sum(len(s["linears"]) for s in r.activation["sites"])
    assert len(r.attention["layers"]) == 2 and all(len(a["sink_share"]) == 4 for a in r.attention["layers"])


def test_row_orders_are_the_stable_sorts_first_k():
    """The orders made for all sites of a group or table at once give, row by row, a stable sort's first k (ties by
    column): the top token maxima (capture.largest_first_rows: float keys, all columns, many ties), the massive
    channel lists (activation._ordered_nonzero: the nonzero columns only) and the INT8 channel lists (int8_top on
    the counts' device, int8_lists on the host: the nonzero counts only, the first 64), on keys with many ties, fewer
    keys than k, and rows with none."""
    import numpy as np
    from sysq.capture import largest_first_rows
    from sysq.detect.activation import _ordered_nonzero, int8_lists, int8_top
    g = np.random.default_rng(0)
    for rows, n, hi, k in ((3, 5000, 7, 64), (5, 300, 40, 64), (4, 40, 3, 64), (2, 64, 2, 64), (6, 65, 2, 64),
                           (3, 1000, 1000, 10), (4, 12, 5, 16), (3, 500, 200_000, 10)):
        key = g.integers(0, hi, (rows, n))
        key[1] = 0
        fkey = (key / 3).astype(np.float32)
        r, c = largest_first_rows(fkey, k)
        want = [np.argsort(-fkey[i], kind="stable")[:k].tolist() for i in range(rows)]
        assert [c[r == i].tolist() for i in range(rows)] == want and (np.diff(r) >= 0).all()
        want = []
        for i in range(rows):
            idx = np.flatnonzero(key[i])
            want.append(idx[np.argsort(-fkey[i][idx], kind="stable")].tolist())
        assert _ordered_nonzero(key, fkey) == want
        got = int8_lists(int8_top(torch.from_numpy(key), k).numpy(), n)
        assert got == [w[:k] for w in want] and all(len(w) == min(k, (key[i] != 0).sum()) for i, w in enumerate(got))


def test_records_made_only_where_kept_match_the_records_of_all():
    """TopK.keep / fill (records made only for the values that stay) leave the items push() leaves, ties included,
    and TokenHits.add_tokens counts as the per-record add of the tokens did (the same Counter insertion order, so
    most_common's ties agree)."""
    from collections import Counter

    import numpy as np
    from sysq.capture import MAX_EXAMPLES, TokenHits, TopK
    g = np.random.default_rng(1)
    for k in (1, 4, 16):
        a, b = TopK(k), TopK(k)
        for _ in range(6):
            values = sorted(g.integers(0, 6, g.integers(0, 20)).astype(float).tolist(), reverse=True)
            recs = [{"v": v, "i": i} for i, v in enumerate(values)]
            a.push(values, recs)
            kept = b.keep(values)
            if kept:
                b.fill([recs[i] for i in kept])
            assert a.items == b.items
    h = TokenHits()
    want = {"initial_ids": Counter(), "ids": Counter(), "positions": Counter()}
    for _ in range(4):
        pos, tids = g.integers(0, 3, 30), g.integers(0, 5, 30)
        n = h.add_tokens(pos, tids)
        assert n == min(30, MAX_EXAMPLES - len(h.examples))
        h.examples.extend([None] * n)
        for p, t in zip(pos.tolist(), tids.tolist()):
            want["initial_ids" if p == 0 else "ids"][t] += 1
            want["positions"][p] += 1
    assert h.count == 120 and len(h.examples) == MAX_EXAMPLES
    for name, c in want.items():
        assert list(getattr(h, name).items()) == list(c.items())


@pytest.mark.long(31)
def test_attention_mass_in_the_triton_interpreter():
    """sysq.attention_mass (the Triton passes and detect through them) in a subprocess with TRITON_INTERPRET=1:
    tests/mass_cases.py."""
    from interpreter import run_cases
    run_cases("mass_cases.py", timeout=600)


def test_attention_probes_fall_back_to_eager():
    """Without the kernel (this CPU, no interpreter) or with logit soft-capping (Gemma2), detect's attention pass
    is eager attention; the mass implementation refuses soft-capping by name."""
    from sysq import attention_mass
    from sysq.arch import get_adapter
    from sysq.detect.attention import attention_probes
    from tiny_models import tiny_model
    assert not attention_mass.available("cpu") or __import__("os").environ.get("TRITON_INTERPRET") == "1"
    model = planted()
    with attention_probes(model, "cpu"):
        assert model.config._attn_implementation == "eager"
    assert model.config._attn_implementation == "sdpa"
    assert get_adapter(model).plain_attention
    assert not get_adapter(tiny_model("gemma2", layers=1)).plain_attention
    with pytest.raises(SysqError, match="softcap"):
        attention_mass.mass_attention_forward(None, *(torch.zeros(1, 1, 2, 4),) * 3, None, softcap=50.0)


@pytest.mark.parametrize("dense", [True, None])
def test_detect_leaves_no_reference_cycles(dense, monkeypatch):
    """Everything detect made is freed when it returns (reference counts), not at the next full garbage collection:
    on a GPU its statistics and pinned host copies would otherwise stay allocated, and the next detect allocate
    new ones."""
    import gc
    monkeypatch.setattr(Recorder, "dense", dense)       # True: the device forms, as on a GPU
    model, x = planted(), ids(n=4, T=24)
    detect(model, x, quiet=True, batch_size=2)
    gc.collect()
    gc.disable()
    try:
        r = detect(model, x, quiet=True, batch_size=2)
        assert r.summary["dominant_channel"] == D
        del r
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_detect_pauses_the_garbage_collector_and_restores_it():
    """The collector is off while detect runs (its small containers would trigger collections, some of them full
    ones over the whole process) and back as the caller had it afterwards, also when detect raises."""
    import gc
    model, seen = planted(), []
    model.model.layers[0].register_forward_pre_hook(lambda mod, a: seen.append(gc.isenabled()))
    assert gc.isenabled()
    detect(model, ids(n=2, T=16), quiet=True)
    assert seen and not any(seen) and gc.isenabled()
    gc.disable()
    try:
        detect(model, ids(n=2, T=16), quiet=True)
        assert not gc.isenabled()                         # a caller's choice is kept
    finally:
        gc.enable()
    with pytest.raises(SysqError):
        detect(model, torch.zeros(0, 4, dtype=torch.long), quiet=True)
    assert gc.isenabled()
