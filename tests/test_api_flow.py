"""The README's Python flow end to end on a tiny model: detect -> plan -> mitigate -> quantize -> save -> load."""
import torch

import sysq
from evaluation.perplexity import perplexity
from sysq import data
from tiny_models import tiny_model


def test_readme_flow_on_a_tiny_llama(tmp_path, tiny_tokenizer):
    text = tmp_path / "t.txt"
    text.write_text("".join(f"line {i} of a small text , with words .\n" for i in range(400)))
    model = tiny_model("llama")
    calib = data.windows(str(text), tiny_tokenizer, n=4, seqlen=32, seed=0)
    test = data.windows(str(text), tiny_tokenizer, n=4, seqlen=32)
    fp = perplexity(model, test, quiet=True).ppl

    report = sysq.detect(model, calib, tokenizer=tiny_tokenizer, quiet=True)
    plan = sysq.plan(report, "w8a8-static")
    recipe = sysq.mitigate(model, plan, calib, report=report, quiet=True)
    sysq.quantize(model, recipe, calib, quiet=True)
    q = perplexity(model, test, quiet=True).ppl
    assert abs(q / fp - 1) < 0.2          # a random tiny model has no outliers: W8A8 stays close to FP

    sysq.save(model, tmp_path / "model", tiny_tokenizer)
    loaded, _ = sysq.load(str(tmp_path / "model"))
    with torch.no_grad():
        assert torch.equal(model(input_ids=test.ids).logits, loaded(input_ids=test.ids).logits)
