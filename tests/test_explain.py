"""sysq.explain on tiny models: the planted outlier of tests/test_detect.py (BOS carries a channel that down_proj
column K of layer BORN turns into a massive residual channel D, cancelled in layer DIES) is ablated by its
column and not by a random one; the anchor-bias model reproduces the prefix model; every family runs, and a
model without a dominant outlier says so."""
import json

import pytest
import torch

from sysq.arch import get_adapter
from sysq.detect import detect
from sysq.explain import AnchorBias, ExplainReport, explain
from sysq.explain.bias import quantize_under_bias
from sysq.explain.ablate import ablated
from sysq.explain.trace import Trace
from sysq.detect.thresholds import Thresholds
from sysq.mitigate.preserve import PrefixModel

from test_detect import BOS, BORN, D, DIES, K, ids, planted
from tiny_models import ENCODERS, FAMILY_CONFIGS, tiny_model


@pytest.fixture(scope="module")
def planted_run():
    model, x = planted(), ids(n=4, T=24)
    report = detect(model, x, quiet=True, snapshot=False)
    return model, x, explain(model, x, report, quiet=True)


def test_ablating_the_planted_column_kills_the_channel_and_the_control_does_not(planted_run):
    _, _, ex = planted_run
    a = ex.ablation["ablate"]
    assert ex.targets["channel"] == D and a["layer"] == BORN and a["columns"] == [K]
    assert K not in a["control_columns"] and len(a["control_columns"]) == 1
    rows = {r["layer"]: r for r in a["layers"]}
    for i in range(BORN, DIES):                          # where the planted channel lives
        assert rows[i]["channel_base"] > 500 and rows[i]["massive_base"] == 4      # BOS of each of the 4 windows
        assert rows[i]["channel_ablated"] < 1e-3 and rows[i]["massive_ablated"] == 0
        assert rows[i]["channel_control"] == pytest.approx(rows[i]["channel_base"], rel=1e-3)
        assert rows[i]["massive_control"] == 4
    assert a["removed"] and a["control_keeps"]
    assert "the massive activation is gone and the control keeps it" in ex.headline[0]
    b = ex.ablation["ablate-anchors"]                 # the columns removed at the outlier token only: the same
    assert b["removed"] and b["control_keeps"] and b["control_columns"] == a["control_columns"]
    # the unmodified model's outlier token is BOS alone; the anchor bias removes the massive activation
    assert ex.anchors["tokens"] == 4
    assert ex.bias["massive_tokens"] == {"base": 4 * (DIES - BORN), "bias": 0}
    assert ex.bias["max_logit_diff"] < 1e-5


def test_shrinking_the_column_to_its_layers_typical_size_also_kills_it():
    model, x = planted(), ids(n=2, T=16)
    ad, th = get_adapter(model), Thresholds()
    before = ad.down(BORN).weight.clone()
    with ablated(ad, BORN, [K], "shrink"), Trace(model, th, [D], hidden=False, attention=False) as tr:
        model(input_ids=x)
    assert torch.equal(ad.down(BORN).weight, before)                 # restored after the block
    assert tr.layers[BORN].chan[:, 0, 0].max() < 100 and not tr.layers[BORN].massive.any()


def test_bias_injection_reproduces_the_prefix_model_exactly():
    """The fixed prefix KV is the prefix model's, computed once: bit for bit per window (a batch of windows differs
    only by the BLAS order of the prefix model's batched BOS pass), and the original model at float error."""
    model, x = planted(), ids(n=3, T=20)
    anchor = AnchorBias(model, [BOS])
    with torch.no_grad():
        ref = model(input_ids=x).logits
        bias = anchor(x).logits
        for b in range(len(x)):
            assert torch.equal(anchor(x[b:b + 1]).logits, PrefixModel(model, model, prefix=1)(x[b:b + 1]).logits)
        assert (bias - PrefixModel(model, model, prefix=1)(x).logits).abs().max() < 1e-6
    assert (bias - ref).abs().max() < 1e-5
    with pytest.raises(Exception, match="start with its anchor token"):
        AnchorBias(model, [BOS])(x[:, 1:])


def test_static_int8_under_the_bias_beats_plain_static_int8():
    """The planted outlier sets the down_proj input's static scale; under the bias the quantizer never sees it."""
    import copy
    from sysq.quant.api import quantize
    model, calib, x = planted(), ids(n=4, T=24, seed=1), ids(n=4, T=24, seed=2)
    with torch.no_grad():
        ref = model(input_ids=x).logits
        plain = copy.deepcopy(model)
        quantize(plain, "w8a8-static", calib, quiet=True)
        e_plain = (plain(input_ids=x).logits - ref).pow(2).mean()
        e_bias = (quantize_under_bias(copy.deepcopy(model), "w8a8-static", calib, [BOS], model, quiet=True)(x).logits - ref
                  ).pow(2).mean()
    assert e_bias < e_plain / 4, (float(e_bias), float(e_plain))
    # a mitigated model's plan applies, but its preserved tokens give way to the bias
    from sysq.mitigate.api import mitigate, plan
    from sysq.quant.api import quant_linears
    m = copy.deepcopy(model)
    mitigate(m, plan(None, "w8a8-static", "preserve-tokens"), calib, quiet=True)
    quantize_under_bias(m, "w8a8-static", calib, [BOS], model, quiet=True)
    specs = [q.act_spec for q in quant_linears(m)]
    assert specs and all(s.preserve_threshold is None and not s.preserve_positions for s in specs)
    with pytest.raises(Exception, match="KV cache"):
        quantize_under_bias(copy.deepcopy(model), "w4a4+kv4", calib, [BOS], model)


def test_explain_runs_on_every_family_and_says_no_dominant_outlier(tmp_path):
    for family in FAMILY_CONFIGS:
        model = tiny_model(family, layers=2)
        x = torch.randint(3, 300, (2, 12), generator=torch.Generator().manual_seed(0))
        x[:, 0] = 1
        report = detect(model, x, quiet=True, snapshot=False)
        ex = explain(model, x, report, quiet=True)
        assert ex.targets["reason"] and "no dominant outlier" in ex.headline[0].lower(), family
        assert ex.ablation == {} and "clamp" not in ex.runs, family
        assert ex.anchors["tokens"] == 2                                  # position 0 stands in, once per window
        encoder = family in ENCODERS          # the first token sees the whole sequence: no fixed bias, no ppl
        assert set(ex.influence) == {"mask-keys", "mask-keys-control"} | (set() if encoder else {"bias"}), family
        assert ex.influence["mask-keys"]["kl"] > 0, family               # hiding position 0 changes something
        assert (ex.influence["mask-keys"]["ppl"] is None) == encoder, family
        assert ("encoder" in " ".join(ex.notes)) == encoder, family
        if not encoder:
            assert ex.bias["max_logit_diff"] < 1e-4, family               # the fixed prefix KV is exact
        layers = ex.updates["layers"]
        assert len(layers) == get_adapter(model).num_layers and all(r["pairs"] > 0 for r in layers), family
        json.dumps(ex.to_dict())
        if family == "gpt2":
            out = ex.save(tmp_path / "ex")                                # one family with its plots
            assert {p.name for p in (out / "plots").iterdir()} == {"sinks.png", "influence.png", "updates.png",
                                                                    "bias.png"}
            assert ExplainReport.load(out).headline == ex.headline


def test_cli_explain_on_a_tiny_folder(tmp_path, tiny_tokenizer, capsys):
    from sysq.cli import main
    folder, text = tmp_path / "tiny", tmp_path / "text.txt"
    planted(vocab=len(tiny_tokenizer)).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    text.write_text("The tower is 324 metres tall , about the same height as an 81 storey building .\n" * 20)
    out = tmp_path / "ex"
    rc = main(["explain", "--model", str(folder), "--data", str(text), "--n", "2", "--seqlen", "16", "--out", str(out),
               "--quiet", "--no-plots"])
    printed = capsys.readouterr().out
    assert rc == 0 and "Weight -> activation (ablate: zero down_proj columns [10]" in printed and (out / "report.md").exists()
    assert json.loads((out / "report.json").read_text())["targets"]["massive_columns"] == [K]
    rc = main(["explain", "--model", str(folder), "--data", str(text), "--report", str(tmp_path / "none"),
               "--out", str(tmp_path / "ex2"), "--quiet"])
    assert rc == 2 and "no outlier report" in capsys.readouterr().err and not (tmp_path / "ex2").exists()
