"""`sysq quantize` and scripts/quantize.py on a tiny model folder and small text files."""
import importlib.util
from pathlib import Path

import torch

import sysq
from conftest import TINY_TEXT
from sysq.cli import main as cli_main
from tiny_models import tiny_model

ROOT = Path(__file__).resolve().parents[1]


def _setup(tmp_path, tiny_tokenizer):
    folder = tmp_path / "tiny"
    model = tiny_model("llama")
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    text = tmp_path / "text.txt"
    text.write_text(TINY_TEXT * 4)
    return folder, text


def test_cli_quantize_prints_counts_bytes_and_perplexity_then_saves(tmp_path, tiny_tokenizer, capsys):
    folder, text = _setup(tmp_path, tiny_tokenizer)
    out = tmp_path / "q"
    rc = cli_main(["--quiet", "quantize", "--model", str(folder), "--recipe", "w8a8-static", "--calib", str(text),
                   "--n", "2", "--seqlen", "16", "--data", str(text), "--ppl-windows", "2", "--ppl-seqlen", "16",
                   "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "14 x w=int8 sym channel, a=int8 sym tensor static" in printed
    assert "parameters+buffers:" in printed and "MiB ->" in printed
    assert "perplexity " in printed and " -> " in printed
    model, tok = sysq.load(str(out))
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 5, 9]])).logits).all()


def test_script_takes_the_same_arguments_and_bad_recipes_exit_2(tmp_path, tiny_tokenizer, capsys):
    folder, text = _setup(tmp_path, tiny_tokenizer)
    spec = importlib.util.spec_from_file_location("quantize_script", ROOT / "scripts" / "quantize.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rc = script.main(["--quiet", "--model", str(folder), "--recipe", "w4a16-pc", "--ppl-windows", "1",
                      "--ppl-seqlen", "16", "--data", str(text)])
    assert rc == 0 and "w=int4 asym channel" in capsys.readouterr().out
    assert script.main(["--model", str(folder), "--recipe", "w9a9"]) == 2
    assert "unknown recipe 'w9a9'" in capsys.readouterr().err
    assert cli_main(["quantize", "--model", str(folder), "--recipe", "bnb-int8", "--out", str(tmp_path / "x")]) == 2
