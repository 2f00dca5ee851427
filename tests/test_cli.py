"""The CLI: help, exit codes that mean something, settings printed with every number."""
import json
import subprocess
import sys

import pytest

from sysq.cli import EXIT_BAD_INPUT, main


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "ppl" in out and "run" in out


def test_missing_model_exits_2_with_the_fix(capsys):
    assert main(["ppl", "--quiet", "--model", "./no/such/folder"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "does not exist" in err and "Pass an existing folder" in err


def test_missing_data_exits_2(capsys):
    code = main(["ppl", "--model", "./nope", "--data", "nothing"])
    assert code == EXIT_BAD_INPUT


@pytest.mark.slow
def test_ppl_cli_on_default_writes_json(tmp_path):
    out = tmp_path / "ppl.json"
    proc = subprocess.run([sys.executable, "-m", "sysq.cli", "--quiet", "ppl", "--seqlen", "128", "--limit", "2",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "seqlen=128" in proc.stdout and "windows=2" in proc.stdout
    res = json.loads(out.read_text())
    assert res["windows"] == 2 and res["tokens"] == 256 and res["ppl"] > 1
