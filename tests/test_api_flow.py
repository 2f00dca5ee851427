"""The README's Python flow end to end on a tiny model, and the one-quantize-path guarantee: the README's flow,
a plain recipe name after mitigate, the comparison grid and `sysq run` build the same model."""
import copy

import torch

import sysq
from evaluation.compare import GridContext, parse_config, _sysq_recipe
from evaluation.perplexity import perplexity
from evaluation.run import RunSettings, run
from sysq import data
from tiny_models import plant_bos_outlier, tiny_model


def _text(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("".join(f"line {i} of a small text , with words .\n" for i in range(400)))
    return str(text)


def test_readme_flow_on_a_tiny_llama(tmp_path, tiny_tokenizer):
    text = _text(tmp_path)
    model = tiny_model("llama")
    calib = data.windows(text, tiny_tokenizer, n=4, seqlen=32, seed=0)
    test = data.windows(text, tiny_tokenizer, n=4, seqlen=32)
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


def planted_llama():
    return plant_bos_outlier(tiny_model("llama"))


@torch.no_grad()
def _logits(model, ids):
    return model(input_ids=ids, use_cache=False).logits


def test_one_quantize_path_readme_name_and_grid_agree(tiny_tokenizer):
    """A plan that clips static activations per linear: the README's flow (mitigate's recipe), a plain recipe
    name after mitigate, and the grid's RECIPE@PLAN handler give identical logits."""
    base = planted_llama()
    calib = sysq.calibration(tiny_tokenizer, n=4, seqlen=32, seed=0)
    report = sysq.detect(base, calib, tokenizer=tiny_tokenizer, quiet=True)
    method = "smooth+clip+preserve-tokens"

    readme = copy.deepcopy(base)
    p = sysq.plan(report, "w8a8-static", method)
    recipe = sysq.mitigate(readme, p, calib, report=report, quiet=True)
    assert recipe.act_clip_ratios and min(recipe.act_clip_ratios.values()) < 1.0   # the seam is exercised
    sysq.quantize(readme, recipe, calib, quiet=True)

    by_name = copy.deepcopy(base)
    sysq.mitigate(by_name, sysq.plan(report, "w8a8-static", method), calib, report=report, quiet=True)
    sysq.quantize(by_name, "w8a8-static", calib, quiet=True)

    grid = copy.deepcopy(base)
    ctx = GridContext(quiet=True)
    ctx._calib, ctx._report = calib, report
    _sysq_recipe(grid, tiny_tokenizer, parse_config(f"w8a8-static@{method}"), ctx)

    ids = calib.ids
    ref = _logits(readme, ids)
    assert torch.equal(ref, _logits(by_name, ids))
    assert torch.equal(ref, _logits(grid, ids))
    # and the clip ratios were applied: without them the static scales (and the logits) differ
    plain = copy.deepcopy(base)
    p2 = sysq.plan(report, "w8a8-static", method)
    r2 = sysq.mitigate(plain, p2, calib, report=report, quiet=True)
    del plain._sysq_plan
    sysq.quantize(plain, r2.__class__(**{**r2.__dict__, "act_clip_ratios": {}}), calib, quiet=True)
    assert not torch.equal(ref, _logits(plain, ids))


def test_sysq_run_equals_the_readme_flow(tmp_path, tiny_tokenizer):
    """`sysq run`'s auto row is the README flow's model: the same perplexity on the same windows."""
    folder = tmp_path / "tiny"
    model = planted_llama()
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    s = RunSettings(model=str(folder), seqlen=32, limit=3, calib_n=4, calib_seqlen=32, task_limit=0,
                    out=str(tmp_path / "out"), quiet=True)
    rows = {r["config"]: r for r in run(s)["rows"]}

    m, tok = sysq.load(str(folder))
    calib = data.windows(s.calib, tok, n=s.calib_n, seqlen=s.calib_seqlen, seed=s.seed)
    test = data.windows(s.data, tok, n=s.limit, seqlen=s.seqlen)
    report = sysq.detect(m, calib, tokenizer=tok, quiet=True)
    recipe = sysq.mitigate(m, sysq.plan(report, s.recipe), calib, report=report, quiet=True)
    sysq.quantize(m, recipe, calib, quiet=True)
    assert perplexity(m, test, quiet=True).ppl == rows[f"{s.recipe} auto"]["ppl"]
