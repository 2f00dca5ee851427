"""detect() on the real SmolLM2-135M, few short windows: structural facts the detector itself reports
must hold together (no numbers copied from a previous run)."""
import pytest

import sysq
from sysq.detect import detect

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reports(smollm2):
    model, tok = smollm2
    out = []
    for seed in (0, 1):                   # two disjoint-ish samples of windows
        w = sysq.windows("wikitext2-valid", tok, n=2, seqlen=96, seed=seed)
        out.append(detect(model, w, tokenizer=tok, quiet=True, snapshot=False))
    return out


def test_dominant_channel_is_stable_across_windows(reports):
    a, b = (r.summary["dominant_channel"] for r in reports)
    assert a is not None and a == b
    assert reports[0].activation["residual_channels"][0]["persistent"]


def test_dominant_outlier_sits_on_the_initial_token(reports):
    for r in reports:
        dom = r.activation["residual_channels"][0]
        assert dom["pos"] == 0
        assert r.tokens["taxonomy"]["counts"]["initial"] > 0


def test_builders_are_aligned_weight_outliers(reports):
    r = reports[0]
    dom = r.summary["dominant_channel"]
    for life in r.lifecycle:
        if life["channel"] != dom or life["tokens"] != "initial":
            continue
        births = [life["emergence"]] + life["amplifications"]
        big = [b for b in births if b and b["builder"] == "mlp"]
        assert big
        for b in big:
            top = b["terms"][0]
            w = r.weights[f"model.layers.{b['layer']}.mlp.down_proj"]
            col = next((c for c in w["top_columns"] if c["column"] == top["column"]), None)
            # the column that writes the most into the dominant channel is largest in that channel's row
            if top["weight_outlier_column"]:
                assert col is not None and col["rows"][0] == dom


def test_vanishing_layers_cancel_with_the_mlp(reports):
    for r in reports:
        for life in r.lifecycle:
            for v in life["vanishing"]:
                if abs(v["mlp"]) > abs(v["attn"]):
                    assert v["mlp"] * v["h_in"] < 0 and v["cancellation_ratio"] > 0


def test_attention_restored_and_sinks_found(smollm2, reports):
    model, _ = smollm2
    assert model.config._attn_implementation != "eager"
    r = reports[0]
    assert r.summary["sink_eps"] is not None and 0 <= r.summary["sink_eps"] <= 1
    seq = r.consistency["sequence"]
    assert seq["both"] <= min(seq["activation"], seq["attention"])
