"""Data resolution and windows: order, non-overlap, BOS, seeded samples, clear errors."""
import json

import pytest
import torch

from sysq import data
from sysq.errors import DataNotFound, SysqError


def test_named_sets_resolve_from_shared_data():
    assert data.resolve("wikitext2").name == "wiki.test.raw"
    assert data.resolve("wikitext2-valid").name == "valid.txt"


def test_sysq_data_env_wins(tmp_path, monkeypatch):
    (tmp_path / "wikitext-2-raw").mkdir()
    (tmp_path / "wikitext-2-raw" / "wiki.test.raw").write_text("hello world\n")
    monkeypatch.setenv("SYSQ_DATA", str(tmp_path))
    assert data.resolve("wikitext2") == tmp_path / "wikitext-2-raw" / "wiki.test.raw"


def test_unknown_name_and_missing_set(tmp_path, monkeypatch):
    with pytest.raises(DataNotFound, match="neither a file nor a named set"):
        data.resolve("no-such-set")
    monkeypatch.setattr(data, "data_roots", lambda: [tmp_path])
    monkeypatch.setitem(data.NAMED_SETS, "piqa-goals", data.NamedSet("piqa/dev.jsonl", None, "goal"))
    with pytest.raises(DataNotFound, match="SYSQ_DATA"):
        data.load_text("piqa-goals")


def test_raw_text_is_lf_normalised():
    text = data.load_text("wikitext2")
    assert "\r" not in text and text.startswith(" = Robert Boulter = \n")


def test_windows_are_non_overlapping_with_bos(tiny_tokenizer, tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("".join(f"line {i} of the text .\n" for i in range(400)))
    ids = data.tokenize(data.load_text(str(path)), tiny_tokenizer)
    w = data.windows(str(path), tiny_tokenizer, n=5, seqlen=32)
    assert w.ids.shape == (5, 33)
    assert (w.ids[:, 0] == tiny_tokenizer.bos_token_id).all()
    assert torch.equal(w.ids[:, 1:].flatten(), ids[: 5 * 32])
    assert w.bos == "<s>" and w.tokens == 5 * 32
    plain = data.windows(str(path), tiny_tokenizer, n=5, seqlen=32, bos=False)
    assert plain.ids.shape == (5, 32) and plain.bos is None


def test_seeded_sample_is_deterministic_and_distinct(tiny_tokenizer, tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("".join(f"sentence number {i} .\n" for i in range(2000)))
    a = data.windows(str(path), tiny_tokenizer, n=8, seqlen=16, seed=0)
    b = data.windows(str(path), tiny_tokenizer, n=8, seqlen=16, seed=0)
    c = data.windows(str(path), tiny_tokenizer, n=8, seqlen=16, seed=1)
    assert torch.equal(a.ids, b.ids) and a.starts == b.starts
    assert a.starts != c.starts
    assert len(set(a.starts)) == 8 and a.starts != list(range(0, 8 * 16, 16))


def test_jsonl_field_and_empty_file(tiny_tokenizer, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"goal": f"goal {i}", "sol1": "x"}) for i in range(3)))
    assert data.load_text(str(path), field="goal") == "goal 0\ngoal 1\ngoal 2"
    with pytest.raises(SysqError, match="no field 'nope'"):
        data.load_text(str(path), field="nope")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(SysqError, match="holds no text"):
        data.windows(str(empty), tiny_tokenizer)


def test_text_shorter_than_a_window(tiny_tokenizer, tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("too short")
    with pytest.raises(SysqError, match="fewer than one window"):
        data.windows(str(path), tiny_tokenizer, seqlen=512)


def test_piqa_goals_named_set(tiny_tokenizer):
    text = data.load_text("piqa-goals")
    assert len(text.splitlines()) == 1838
