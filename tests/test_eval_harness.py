"""The local lm-eval tasks: built from shared/data, run on a tiny llama, scored as lm-eval scores them."""
import json
import math

import pytest
import torch
import yaml

from evaluation import harness
from sysq.errors import SysqError
from tiny_models import tiny_model


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    return harness.write_tasks(tmp_path_factory.mktemp("tasks"))


def _docs(task_dir, name):
    return [json.loads(line) for line in (task_dir / f"{name}.jsonl").read_text().splitlines()]


def test_write_tasks_converts_the_shared_files(task_dir):
    root = harness.data_root()
    piqa = _docs(task_dir, "piqa_local")
    labels = (root / "piqa/dev-labels.lst").read_text().split()
    assert len(piqa) == len(labels) and [str(d["label"]) for d in piqa] == labels
    first = json.loads((root / "piqa/dev.jsonl").read_text().splitlines()[0])
    assert piqa[0]["goal"] == first["goal"] and piqa[0]["sol2"] == first["sol2"]

    arc = _docs(task_dir, "arc_easy_local")
    raw = (root / "arc_easy/ARC-Easy-Test.genmc.jsonl").read_text().splitlines()
    assert len(arc) == len(raw)
    assert all(d["answerKey"] in d["choices"]["label"] for d in arc)
    assert any(d["answerKey"] in "1234" for d in arc)  # numeric keys survive, mapped by position

    wiki = _docs(task_dir, "wikitext2_local")
    text = (root / "wikitext-2-raw/wiki.test.raw").read_text(encoding="utf-8").replace("\r\n", "\n")
    assert "".join(d["page"] for d in wiki) == text
    assert all(d["page"].startswith(" = ") and not d["page"].startswith(" = = ") for d in wiki)

    for name in harness.LOCAL_TASKS:
        cfg = yaml.safe_load((task_dir / f"{name}.yaml").read_text())
        assert cfg["task"] == name
        (path,) = cfg["dataset_kwargs"]["data_files"].values()
        assert path.startswith("/") and path.endswith(f"{name}.jsonl")


def test_unknown_local_task_and_empty_task_list_are_clear_errors(tmp_path):
    with pytest.raises(SysqError, match="unknown local task"):
        harness.write_tasks(tmp_path, ["piqa_locall"])
    with pytest.raises(SysqError, match="no tasks"):
        harness.evaluate(None, None, tasks=" , ")


def test_bos_is_prepended_without_touching_the_callers_tokenizer(tiny_tokenizer):
    model = tiny_model("llama")
    bos = tiny_tokenizer.bos_token_id
    before = tiny_tokenizer.encode("The tower")
    assert harness.make_lm(model, tiny_tokenizer, bos=True).tok_encode("The tower") == [bos] + before
    assert harness.make_lm(model, tiny_tokenizer, bos=False).tok_encode("The tower") == before
    assert tiny_tokenizer.encode("The tower") == before


def _loglikelihood(model, ids: list[int], n_cont: int) -> float:
    logits = model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits[:-1], -1)
    target = torch.tensor(ids[1:])
    return logp[torch.arange(len(ids) - 1), target][-n_cont:].sum().item()


def test_local_tasks_run_with_limit_and_match_a_direct_computation(tiny_tokenizer, task_dir):
    model = tiny_model("llama")
    limit = 5
    res = harness.evaluate(model, tiny_tokenizer, ["piqa_local", "arc_easy_local"], limit=limit, batch_size=4,
                           task_dir=task_dir, log_samples=True, quiet=True,
                           sysq_info={"recipe": "fp", "plan": "none"})
    summary = harness.summarize(res)
    for name in ("piqa_local", "arc_easy_local"):
        s = summary[name]
        assert s["n"] == limit
        assert 0.0 <= s["acc"] <= 1.0 and 0.0 <= s["acc_norm"] <= 1.0 and s["acc_stderr"] >= 0
    assert res["sysq"]["recipe"] == "fp" and res["sysq"]["bos"] is True and res["sysq"]["limit"] == limit

    # lm-eval's per-choice loglikelihoods equal ours: BOS + "Question: ...\nAnswer:" + " choice".
    bos = tiny_tokenizer.bos_token_id
    docs = _docs(task_dir, "piqa_local")[:limit]
    correct = []
    with torch.no_grad():
        for sample in res["samples"]["piqa_local"]:
            doc = docs[sample["doc_id"]]
            ctx = f"Question: {doc['goal']}\nAnswer:"
            lls = []
            for sol in (doc["sol1"], doc["sol2"]):
                whole = [bos] + tiny_tokenizer.encode(ctx + " " + sol)
                n_ctx = 1 + len(tiny_tokenizer.encode(ctx))
                lls.append(_loglikelihood(model, whole, len(whole) - n_ctx))
            got = [r[0][0] for r in sample["resps"]]
            assert got == pytest.approx(lls, abs=1e-3)
            correct.append(float(lls.index(max(lls)) == doc["label"]))
    assert summary["piqa_local"]["acc"] == pytest.approx(sum(correct) / limit)


def test_wikitext_rolling_task_scores_whole_articles(tiny_tokenizer, task_dir):
    res = harness.evaluate(tiny_model("llama"), tiny_tokenizer, "wikitext2_local", limit=1, task_dir=task_dir,
                           quiet=True)
    s = harness.summarize(res)["wikitext2_local"]
    assert s["n"] == 1
    assert res["sysq"]["max_length"] == 256   # the tiny model's context, below the 2048 cap
    # A random model over a 300-token vocabulary: per-byte perplexity above 1, bits_per_byte = log2 of it.
    assert s["byte_perplexity"] > 1
    assert s["bits_per_byte"] == pytest.approx(math.log2(s["byte_perplexity"]), rel=1e-6)


def test_save_results_keeps_lm_evals_json_and_adds_sysq(tiny_tokenizer, task_dir, tmp_path):
    res = harness.evaluate(tiny_model("llama"), tiny_tokenizer, "arc_easy_local", limit=2, task_dir=task_dir,
                           quiet=True, sysq_info={"recipe": "w8a8"})
    path = harness.save_results(res, tmp_path)
    saved = json.loads(path.read_text())
    assert saved["results"]["arc_easy_local"]["acc,none"] == res["results"]["arc_easy_local"]["acc,none"]
    assert {"configs", "versions", "n-samples"} <= saved.keys()
    assert saved["sysq"]["recipe"] == "w8a8"
    assert "arc_easy_local" in (tmp_path / "results.md").read_text()


@pytest.fixture
def tiny_folders(tiny_tokenizer, tmp_path):
    """A float HF folder and a folder saved by sysq after w8a8, both of the same tiny llama."""
    import sysq

    model = tiny_model("llama")
    fp = tmp_path / "fp"
    model.save_pretrained(fp)
    tiny_tokenizer.save_pretrained(fp)
    sysq.quantize(model, "w8a8")
    q = sysq.save(model, tmp_path / "w8a8", tokenizer=tiny_tokenizer)
    return fp, q


def test_sysq_eval_command_on_float_and_quantized_folders(tiny_folders, tmp_path, capsys):
    from sysq.cli import main

    fp, q = tiny_folders
    for folder, recipe in ((fp, "fp"), (q, "w8a8")):
        out = tmp_path / f"eval-{recipe}"
        rc = main(["eval", "--model", str(folder), "--tasks", "piqa_local", "--limit", "3", "--out", str(out),
                   "--quiet", "--num_fewshot", "0"])
        assert rc == 0
        saved = json.loads((out / "results.json").read_text())
        assert saved["sysq"]["recipe"] == recipe and saved["sysq"]["limit"] == 3
        assert saved["sysq"]["num_fewshot"] == 0 and saved["n-shot"]["piqa_local"] == 0
        assert saved["n-samples"]["piqa_local"]["effective"] == 3
        assert "piqa_local" in capsys.readouterr().out
    assert json.loads((tmp_path / "eval-w8a8/results.json").read_text())["sysq"]["bits"]["act"] == 8


def test_sysq_eval_write_tasks_and_bad_input(tmp_path):
    from sysq.cli import main

    assert main(["eval", "--write-tasks", str(tmp_path / "t")]) == 0
    assert sorted(p.name for p in (tmp_path / "t").glob("*.yaml")) == sorted(f"{t}.yaml" for t in harness.LOCAL_TASKS)
    assert main(["eval", "--model", str(tmp_path / "missing"), "--tasks", "piqa_local"]) == 2
    assert main(["eval", "--model", str(tmp_path / "missing"), "--lm-eval", "oops"]) == 2


def test_lm_eval_model_type_sysq_loads_any_sysq_folder(tiny_folders):
    from lm_eval.api.registry import get_model

    harness.register_sysq_model()   # what evaluation/lm_eval_main.py does before lm-eval's CLI
    fp, q = tiny_folders
    lm = get_model("sysq").create_from_arg_string(f"pretrained={q},add_bos_token=True", {"batch_size": 2})
    assert type(lm._model.model.layers[0].mlp.down_proj).__name__ == "QuantLinear"
    bos = lm.tokenizer.bos_token_id
    assert lm.tok_encode("The tower")[0] == bos and lm.batch_size == 2


@pytest.mark.slow
def test_smollm2_prompts_start_with_bos_and_score(smollm2, task_dir):
    model, tok = smollm2
    assert tok.encode("Question:")[0] != tok.bos_token_id          # its tokenizer adds no BOS by itself
    assert harness.make_lm(model, tok).tok_encode("Question:")[0] == tok.bos_token_id
    res = harness.evaluate(model, tok, "piqa_local", limit=4, task_dir=task_dir, quiet=True)
    assert harness.summarize(res)["piqa_local"]["n"] == 4 and res["sysq"]["bos"] is True
