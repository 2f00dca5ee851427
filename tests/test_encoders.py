"""Encoders (BERT, RoBERTa): detect finds a planted [CLS] outlier, auto mitigates without changing the float
function, quantize -> save -> reload gives identical logits, and masked-token perplexity follows its protocol."""
import copy

import pytest
import torch

import sysq
from evaluation.masked import masked_perplexity, masked_positions
from sysq import data
from sysq.arch import get_adapter
from sysq.errors import SysqError
from tiny_models import plant_bos_outlier, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

CLS = 2       # the WordPiece fixture's [CLS]


def _text(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(("the tower is 324 metres tall , about the same height as an 81 storey building . "
                     "it was the first structure to reach a height of 300 metres ; in 1957 , an antenna was added .\n")
                    * 40)
    return str(path)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_encoder_round_trip(family, tmp_path, wordpiece_tokenizer):
    tok = wordpiece_tokenizer
    model = plant_bos_outlier(tiny_model(family), bos=CLS)
    calib = data.windows(_text(tmp_path), tok, n=6, seqlen=24, seed=0)
    assert (calib.ids[:, 0] == CLS).all()                      # an encoder's windows start with [CLS]

    report = sysq.detect(model, calib, tokenizer=tok, quiet=True)
    assert report.outlier_tokens()[0]["token"] == "[CLS]"       # the planted outlier, found at [CLS]
    assert report.model["family"] == family

    p = sysq.plan(report, "w8a8-static")
    before = model(input_ids=calib.ids).logits.detach()
    mitigated = copy.deepcopy(model)
    recipe = sysq.mitigate(mitigated, p, calib, report=report, quiet=True)
    assert p.search.chosen in p.search.candidates and p.preserve_tokens is not None
    with torch.no_grad():
        assert (mitigated(input_ids=calib.ids).logits - before).abs().max() < 1e-4 * before.abs().max()
    sysq.quantize(mitigated, recipe, calib, quiet=True)

    out = sysq.save(mitigated, tmp_path / "q", tok)
    loaded, tok2 = sysq.load(str(out))
    assert type(loaded).__name__.endswith("ForMaskedLM")
    test = data.windows(_text(tmp_path), tok2, n=3, seqlen=24)
    with torch.no_grad():
        assert torch.equal(mitigated(input_ids=test.ids).logits, loaded(input_ids=test.ids).logits)
    a = masked_perplexity(mitigated, test, tok, quiet=True)
    assert a.ppl == masked_perplexity(loaded, test, tok2, quiet=True).ppl


def test_masked_perplexity_protocol(tmp_path, wordpiece_tokenizer):
    tok = wordpiece_tokenizer
    model = tiny_model("bert")
    w = data.windows(_text(tmp_path), tok, n=3, seqlen=40)
    r = masked_perplexity(model, w, tok, quiet=True)
    assert r.masked == 3 * 6 and r.windows == 3 and r.seqlen == 40          # round(0.15 x 40) per window
    assert "masked" in str(r) and "protocol" in str(r) and "15%" in r.protocol
    assert masked_perplexity(model, w, tok, quiet=True).ppl == r.ppl        # fixed positions
    assert masked_perplexity(model, w, tok, seed=1, quiet=True).ppl != r.ppl
    pos = masked_positions(40, 0.15, 0, 2)
    assert pos.min() >= 1 and pos.max() <= 40 and len(set(pos.tolist())) == 6   # text positions, never [CLS]
    # the score depends on the model: a perturbed copy scores differently on the same positions
    other = copy.deepcopy(model)
    with torch.no_grad():
        get_adapter(other).down(0).weight.mul_(3.0)
    assert masked_perplexity(other, w, tok, quiet=True).ppl != r.ppl
    with pytest.raises(SysqError, match="seqlen"):
        masked_perplexity(model, data.windows(_text(tmp_path), tok, n=1, seqlen=300), tok, quiet=True)


def test_cli_ppl_picks_masked_perplexity_for_encoders(tmp_path, wordpiece_tokenizer, capsys):
    from sysq.cli import main
    folder = tmp_path / "bert"
    tiny_model("bert").save_pretrained(folder)
    wordpiece_tokenizer.save_pretrained(folder)
    assert main(["ppl", "--model", str(folder), "--data", _text(tmp_path), "--limit", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "masked perplexity" in out and "protocol" in out and "seqlen=" in out
