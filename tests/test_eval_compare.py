"""The comparison grid on a tiny llama: rows, outputs, resuming, broken rows, and the real peer libraries."""
import csv
import json

import pytest

from evaluation import compare
from sysq.errors import SysqError
from tiny_models import tiny_model



@pytest.fixture
def small_text(tmp_path):
    from sysq.data import resolve
    path = tmp_path / "text.txt"
    path.write_text(resolve("wikitext2").read_text(encoding="utf-8")[:20000])
    return str(path)


@pytest.fixture
def settings(small_text):
    """Perplexity only (lm-eval costs ~2 s a row); the first test adds a task."""
    return compare.GridSettings(model="tiny-llama", data=small_text, seqlen=32, windows=3, tasks=(), limit=3,
                                calib_n=2, calib_seqlen=32)


@pytest.fixture
def loader(tiny_tokenizer):
    calls = []

    def load():
        calls.append(1)
        return tiny_model("llama"), tiny_tokenizer
    load.calls = calls
    return load


def _results(out):
    return json.loads((out / "results.json").read_text())


def test_grid_writes_one_row_per_configuration_with_fp_first(settings, loader, tmp_path):
    settings.tasks = ("piqa_local",)
    rows = compare.run_grid(["w8a8", "w4a16-g128"], settings, out=tmp_path, loader=loader, quiet=True)
    assert [r.config for r in rows] == ["fp", "w8a8", "w4a16-g128"]
    fp, w8, w4 = rows
    assert all(r.status == "ok" for r in rows)
    assert fp.ppl_ratio == 1.0 and w4.ppl_ratio == pytest.approx(w4.ppl / fp.ppl)
    assert fp.modules == {"Linear": 14} and w8.modules == {"QuantLinear": 14}
    assert w4.weight_bytes < w8.weight_bytes < fp.weight_bytes     # int4 codes < int8 codes < float32
    assert w8.perplexity["windows"] == 3 and w8.perplexity["seqlen"] == 32
    assert set(fp.tasks["piqa_local"]) >= {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "n"}
    assert fp.tasks["piqa_local"]["n"] == 3

    saved = _results(tmp_path)
    assert [r["config"] for r in saved["rows"]] == ["fp", "w8a8", "w4a16-g128"]
    assert saved["settings"]["seqlen"] == 32
    with open(tmp_path / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["config"] for r in table] == ["fp", "w8a8", "w4a16-g128"]
    assert float(table[2]["ppl"]) == pytest.approx(w4.ppl)
    md = (tmp_path / "results.md").read_text()
    assert "| w4a16-g128 |" in md and "seqlen 32" in md
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_grid_resumes_rows_with_the_same_settings(settings, loader, tmp_path):
    first = compare.run_grid(["w8a8"], settings, out=tmp_path, loader=loader, quiet=True)
    n_loads = len(loader.calls)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "rows").iterdir()}

    again = compare.run_grid(["w8a8"], settings, out=tmp_path, loader=loader, quiet=True)
    assert len(loader.calls) == n_loads                      # nothing loaded, nothing computed
    assert all(r.reused for r in again)
    assert [r.ppl for r in again] == [r.ppl for r in first]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "rows").iterdir()} == mtimes

    # One more configuration: only that row is computed (one load for the tokenizer, one for the row).
    more = compare.run_grid(["w8a8", "w8a16"], settings, out=tmp_path, loader=loader, quiet=True)
    assert [r.reused for r in more] == [True, True, False]
    assert len(loader.calls) == n_loads + 2

    # A changed setting is a different row key: recomputed, not confused with the cached one.
    changed = compare.GridSettings(**{**settings.to_dict(), "tasks": tuple(settings.tasks), "windows": 2})
    rows = compare.run_grid(["w8a8"], changed, out=tmp_path, loader=loader, quiet=True)
    assert not any(r.reused for r in rows) and rows[0].perplexity["windows"] == 2


def test_unknown_recipe_fails_clearly_and_keeps_the_other_rows(settings, loader, tmp_path):
    rows = compare.run_grid(["w8a8", "w9a9", "w8a16"], settings, out=tmp_path, loader=loader, quiet=True)
    status = {r.config: r.status for r in rows}
    assert status == {"fp": "ok", "w8a8": "ok", "w9a9": "error", "w8a16": "ok"}
    bad = next(r for r in rows if r.config == "w9a9")
    assert "unknown recipe 'w9a9'" in bad.error and bad.ppl is None
    saved = {r["config"]: r for r in _results(tmp_path)["rows"]}
    assert saved["w9a9"]["status"] == "error" and saved["w8a16"]["ppl"] == pytest.approx(rows[-1].ppl)
    assert "error: SysqError: unknown recipe 'w9a9'" in (tmp_path / "results.md").read_text()

    # fail_fast stops at the broken row, after writing it and every row before it.
    out = tmp_path / "ff"
    with pytest.raises(SysqError, match="unknown recipe"):
        compare.run_grid(["w8a8", "w9a9", "w8a16"], settings, out=out, loader=loader, quiet=True, fail_fast=True)
    saved = [(r["config"], r["status"]) for r in _results(out)["rows"]]
    assert saved == [("fp", "ok"), ("w8a8", "ok"), ("w9a9", "error")]
    # The error row is retried on the next run; the good rows are reused.
    rows = compare.run_grid(["w8a8", "w8a16"], settings, out=out, loader=loader, quiet=True)
    assert [r.reused for r in rows] == [True, True, False]


def test_peer_baselines_run_the_peer_libraries(settings, loader, tmp_path):
    rows = compare.run_grid(["bnb-int8", "bnb-nf4", "quanto-w8a8", "quanto-w4"], settings, out=tmp_path,
                            loader=loader, quiet=True)
    by = {r.config: r for r in rows}
    assert all(r.status == "ok" for r in rows), [r.error for r in rows]
    assert by["bnb-int8"].modules == {"Linear8bitLt": 14}
    assert by["bnb-nf4"].modules == {"Linear4bit": 14}
    assert by["quanto-w8a8"].modules == {"QLinear": 14} and by["quanto-w4"].modules == {"QLinear": 14}
    assert by["quanto-w8a8"].info["activations"] == "qint8" and by["quanto-w4"].info["weights"] == "qint4"
    fp = by["fp"].weight_bytes
    # quanto's QTensors are counted by their int codes and scales, not their float shape
    assert by["quanto-w4"].weight_bytes < by["quanto-w8a8"].weight_bytes < fp
    assert by["bnb-nf4"].weight_bytes < by["bnb-int8"].weight_bytes < fp
    for r in rows[1:]:
        assert r.ppl != by["fp"].ppl   # the kernels really changed the numbers


def test_configuration_names():
    assert compare.parse_config("w8a8-static@auto") == compare.Config("w8a8-static@auto", "w8a8-static", "auto")
    assert compare.parse_config("w8a8+kv4").plan == "none"
    with pytest.raises(SysqError, match="empty configuration"):
        compare.parse_config(" ")
    with pytest.raises(SysqError, match="repeat"):
        compare.run_grid(["w8a8", "w8a8"], out="/nonexistent-never-written")


FAKE_PEER = '''
import json, pathlib, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
spec = json.loads(pathlib.Path(sys.argv[1]).read_text())
ids = torch.load(spec["windows"])
m = AutoModelForCausalLM.from_pretrained(spec["model"])
with torch.no_grad():
    for n, p in m.named_parameters():
        if n.endswith("proj.weight"):
            p.copy_((p * 8).round() / 8)               # a crude "quantizer": the grid must measure what it wrote
m.save_pretrained(spec["out"])
pathlib.Path(spec["out"], "peer.json").write_text(json.dumps({"library": "fake 1.0", "calib": list(ids.shape)}))
with open(pathlib.Path(spec["model"]) / "runs.txt", "a") as f:
    f.write("1")
'''


@pytest.mark.parametrize("venv_name, config", [("autoround", "autoround-w4a16-g64-cpu"),
                                               ("llmcompressor", "llmc-gptq-w4a16-g64")])
@pytest.mark.long(22)
def test_peer_checkpoints_are_made_once_per_calibration_and_reused_across_window_sets(settings, tmp_path,
                                                                                     tiny_tokenizer, monkeypatch,
                                                                                     venv_name, config):
    """A peer row runs its script in its own environment's python (here: a wrapper around this one) on the grid's
    calibration windows; the grid measures the checkpoint, and a second window set sharing --cache reuses it."""
    import sys

    from evaluation import peers
    folder = tmp_path / "tiny"
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    venv = tmp_path / "venvs" / venv_name
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (venv / "bin" / "python").chmod(0o755)
    (venv / ".complete").touch()
    monkeypatch.setenv("SYSQ_PEER_VENVS", str(tmp_path / "venvs"))
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / f"{venv_name}_quantize.py").write_text(FAKE_PEER)
    monkeypatch.setattr(peers, "SCRIPTS", tmp_path / "scripts")
    settings.model = str(folder)
    fp, peer = compare.run_grid([config], settings, out=tmp_path / "w0", quiet=True,
                                cache=tmp_path / "cache")
    assert peer.status == "ok", peer.error
    assert peer.info["library"] == "fake 1.0" and peer.info["calib"] == [2, 33]   # the grid's 2 x (BOS + 32)
    assert peer.ppl != fp.ppl and peer.modules == {"Linear": 14}
    settings.window_offset = 3
    again = compare.run_grid([config], settings, out=tmp_path / "w3", quiet=True,
                             cache=tmp_path / "cache")[1]
    assert again.status == "ok" and again.info["reused"] and again.ppl != peer.ppl
    assert (folder / "runs.txt").read_text() == "1"                                 # quantized once


def test_window_offset_measures_a_disjoint_set_and_kept_models_are_reused(settings, loader, tmp_path):
    a = compare.run_grid(["w4a16-g128"], settings, out=tmp_path, loader=loader, quiet=True, keep_models=True)[1]
    n_loads = len(loader.calls)
    settings.window_offset = 3
    b = compare.run_grid(["w4a16-g128"], settings, out=tmp_path, loader=loader, quiet=True, keep_models=True)[1]
    assert a.perplexity["windows"] == b.perplexity["windows"] == 3 and a.ppl != b.ppl
    assert b.info["model_reused_from"].startswith(str(tmp_path / "models"))
    assert b.info["description"] == a.info["description"]
    assert len(loader.calls) == n_loads + 3        # FP row, the windows' tokenizer, the reused row's tokenizer
    assert "windows 3-5" in (tmp_path / "results.md").read_text()


def test_int4_table_keeps_merged_rows_of_one_config_with_different_calibration_apart():
    """call I5 merged one config calibrated on 8 and on 32 windows: each row must show its own perplexity (the table
    once keyed rows by config name alone and printed the 32-window numbers twice)."""
    import importlib.util
    import pathlib
    spec = importlib.util.spec_from_file_location(
        "int4_table", pathlib.Path(__file__).resolve().parents[1] / "scripts" / "int4_table.py")
    t = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(t)
    s = compare.GridSettings(model="m", calib_n=8)

    def row(cfg, n, ppl):
        return compare.Row(cfg, cfg, "", key=f"{cfg}{n}", ppl=ppl, ppl_ratio=ppl / 10, settings={"calib_n": n})
    sets = {0: [row("fp", 8, 10.0), row("w4", 8, 11.0)]}
    merged = {0: [row("fp", 32, 10.0), row("w4", 32, 10.5)]}
    lines = [ln for ln in t.table(sets, s, merged).splitlines() if ln.startswith("| w4 ")]
    assert [ln.split(" | ")[2] for ln in lines] == ["11.000", "10.500"]
    assert "calibration 32 x" in lines[1] and "calibration" not in lines[0]
