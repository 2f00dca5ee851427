"""Perplexity: agrees with the model's own loss, carries its settings, rejects NaN; real SmolLM2 in a sane band."""
import math

import pytest
import torch

from evaluation.perplexity import perplexity
from sysq import data
from sysq.errors import NonFiniteError
from tiny_models import tiny_model


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("".join(f"the {i} th line , with some words .\n" for i in range(300)))
    return str(path)


def test_matches_hf_loss(tiny_tokenizer, text_file):
    model = tiny_model("llama")
    w = data.windows(text_file, tiny_tokenizer, n=3, seqlen=24)
    res = perplexity(model, w, batch_size=2, quiet=True, model_name="tiny")
    with torch.no_grad():
        losses = [model(input_ids=row[None], labels=row[None]).loss.item() for row in w]
    assert math.isclose(res.nll, sum(losses) / len(losses), rel_tol=1e-5)
    assert res.tokens == 3 * 24 and res.windows == 3 and res.seqlen == 24 and res.bos == "<s>"
    assert res.dtype == "float32" and res.dataset == text_file and res.model == "tiny"


def test_nan_logits_raise(tiny_tokenizer, text_file):
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="NaN or inf"):
        perplexity(model, data.windows(text_file, tiny_tokenizer, n=1, seqlen=16), quiet=True)


@pytest.mark.slow
def test_smollm2_short_perplexity_is_sane(smollm2):
    model, tok = smollm2
    w = data.windows("wikitext2", tok, n=2, seqlen=256)
    res = perplexity(model, w, quiet=True)
    # a 135M model on WikiText-2: far below uniform (49152) and above a perfect model
    assert math.isfinite(res.ppl) and 5 < res.ppl < 100
    assert res.bos == "<|im_start|>" and res.tokens == 512
