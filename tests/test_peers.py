"""Peer tools in their own virtual environments: a missing environment is a clear error naming the command that
makes it, and a grid row for such a peer becomes an error row with that fix while the other rows stand."""
import pytest

from evaluation.compare import GridSettings, run_grid
from evaluation.peers import venv_python
from sysq.errors import SysqError
from tiny_models import tiny_model


def test_a_missing_peer_venv_names_the_command_that_makes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SYSQ_PEER_VENVS", str(tmp_path))
    with pytest.raises(SysqError, match=r"bash scripts/peers/make_venv.sh llmcompressor"):
        venv_python("llmcompressor")
    (tmp_path / "llmcompressor" / "bin").mkdir(parents=True)
    (tmp_path / "llmcompressor" / "bin" / "python").write_text("")
    with pytest.raises(SysqError, match="make_venv.sh"):     # half-made (no .complete marker): still refused
        venv_python("llmcompressor")


def test_a_peer_row_without_its_venv_is_an_error_row_with_the_fix(tmp_path, tiny_tokenizer, monkeypatch):
    monkeypatch.setenv("SYSQ_PEER_VENVS", str(tmp_path / "none"))
    folder = tmp_path / "tiny"
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    settings = GridSettings(model=str(folder), seqlen=16, windows=2, tasks=(), calib_n=2, calib_seqlen=16)
    rows = run_grid(["fp", "llmc-gptq-w4a16-g64"], settings, out=tmp_path / "grid", quiet=True)
    by = {r.config: r for r in rows}
    assert by["fp"].status == "ok" and by["llmc-gptq-w4a16-g64"].status == "error"
    assert "make_venv.sh llmcompressor" in by["llmc-gptq-w4a16-g64"].error
