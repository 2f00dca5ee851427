"""`sysq quantize` and scripts/quantize.py on a tiny model folder and small text files: every --mitigate form,
--report reuse, the saved folder's contents and reload, compressed-tensors with --target engine, bad input."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml

import sysq
from conftest import TINY_TEXT
from sysq.cli import main as cli_main
from tiny_models import plant_bos_outlier, tiny_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def setup(tmp_path, tiny_tokenizer):
    folder = tmp_path / "tiny"
    model = plant_bos_outlier(tiny_model("llama"))
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    text = tmp_path / "text.txt"
    text.write_text(TINY_TEXT * 4)
    common = ["--model", str(folder), "--calib", str(text), "--n", "2", "--seqlen", "16", "--detect-n", "2",
              "--data", str(text), "--ppl-windows", "2", "--ppl-seqlen", "16"]
    return folder, text, common


def _quantize(args, capsys):
    rc = cli_main(["--quiet", "quantize", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _same_logits(a, b):
    ids = torch.tensor([[1, 5, 9, 17, 33]])
    with torch.no_grad():
        return torch.equal(a(input_ids=ids).logits, b(input_ids=ids).logits)


def test_default_is_auto_and_the_folder_holds_plan_report_and_reloads(setup, tmp_path, capsys):
    _, _, common = setup
    out = tmp_path / "q"
    # 4 calibration windows: auto's split search scores on the last min(2, n // 2) and fits on the others; with 2
    # each side is one 16-token window, too little for the preserved-token statistics (it then measures 'none' best)
    rc, printed, _ = _quantize([*common, "--n", "4", "--recipe", "w8a8-static", "--out", str(out)], capsys)
    assert rc == 0
    assert "mitigate=auto" in printed and "== detect" in printed
    assert "auto: chose" in printed and "preserve tokens: positions [0]" in printed   # measured auto
    assert "14 x w=int8 sym channel, a=int8 sym tensor static" in printed
    assert "perplexity " in printed and "x" in printed and "FP) on" in printed
    assert "logits max |diff| 0" in printed                        # the command's own reload check
    assert {"plan.yaml", "outliers.md", "quantize.json", "sysq_model.safetensors"} <= {p.name for p in out.iterdir()}
    plan = yaml.safe_load((out / "plan.yaml").read_text())
    assert plan["method"] == "auto" and plan["preserve_tokens"]["positions"] == [0]
    assert plan["search"]["chosen"] in plan["search"]["candidates"]
    q = json.loads((out / "quantize.json").read_text())
    assert q["mitigate"] == "auto" and q["verify"]["logits_max_abs_diff"] == 0 and q["verify"]["ratio_to_sysq"] == 1
    assert "dominant" in (out / "outliers.md").read_text().lower() or (out / "outliers.md").read_text().strip()


def test_mitigate_none_methods_and_an_edited_plan_file(setup, tmp_path, capsys):
    folder, _, common = setup
    rc, printed, _ = _quantize([*common, "--recipe", "w8a8-static", "--mitigate", "none", "--out",
                                str(tmp_path / "naive")], capsys)
    assert rc == 0 and "== mitigate" not in printed and "== detect" not in printed
    assert not (tmp_path / "naive" / "plan.yaml").exists()

    rc, printed, _ = _quantize([*common, "--recipe", "w8a8-static", "--mitigate", "smooth+clip", "--out",
                                str(tmp_path / "sc")], capsys)
    assert rc == 0 and "smooth: alpha searched" in printed and "clip: weights=False activations=True" in printed
    plan = yaml.safe_load((tmp_path / "sc" / "plan.yaml").read_text())
    assert plan["rotate"] is None and plan["smooth"]["chosen"] is not None

    # edit the saved plan: no smoothing, only clipping; the command applies exactly that
    plan["smooth"] = None
    plan["clip"]["chosen"] = {}
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(plan))
    rc, printed, _ = _quantize([*common, "--recipe", "w8a8-static", "--mitigate", str(edited), "--out",
                                str(tmp_path / "ed")], capsys)
    assert rc == 0 and "smooth:" not in printed.split("== mitigate")[1] and "== detect" not in printed
    a, _ = sysq.load(str(tmp_path / "sc"))
    b, _ = sysq.load(str(tmp_path / "ed"))
    assert not _same_logits(a, b)


def test_report_is_reused_instead_of_detecting(setup, tmp_path, capsys):
    folder, text, common = setup
    assert cli_main(["--quiet", "detect", "--model", str(folder), "--data", str(text), "--n", "2", "--seqlen", "16",
                     "--no-plots", "--out", str(tmp_path / "det")]) == 0
    capsys.readouterr()
    rc, printed, _ = _quantize([*common, "--recipe", "w8a8", "--report", str(tmp_path / "det"), "--out",
                                str(tmp_path / "q")], capsys)
    assert rc == 0 and "== detect" not in printed and "outlier report:" in printed


def test_bad_plan_and_report_files_fail_clearly_and_write_nothing(setup, tmp_path, capsys):
    _, _, common = setup
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: auto\nrotate: {residual: true, spin: 3}\n")
    rc, _, err = _quantize([*common, "--mitigate", str(bad), "--out", str(tmp_path / "x")], capsys)
    assert rc == 2 and "unknown field(s) spin in rotate" in err and not (tmp_path / "x").exists()
    bad.write_text("method: [auto\n")
    rc, _, err = _quantize([*common, "--mitigate", str(bad), "--out", str(tmp_path / "x")], capsys)
    assert rc == 2 and "not valid YAML" in err and not (tmp_path / "x").exists()
    rc, _, err = _quantize([*common, "--mitigate", "smooth+spin", "--out", str(tmp_path / "x")], capsys)
    assert rc == 2 and "unknown mitigation method" in err and not (tmp_path / "x").exists()
    (tmp_path / "r.json").write_text("{not json")
    rc, _, err = _quantize([*common, "--report", str(tmp_path / "r.json"), "--out", str(tmp_path / "x")], capsys)
    assert rc == 2 and "not a JSON outlier report" in err and not (tmp_path / "x").exists()
    assert not list(tmp_path.glob(".x*"))                         # no temporary folder left behind


def test_compressed_tensors_output_defaults_to_the_engine_plan_and_reports_its_cost(setup, tmp_path, capsys):
    _, _, common = setup
    out = tmp_path / "ct"
    rc, printed, _ = _quantize([*common, "--recipe", "w8a8-static", "--format", "compressed-tensors", "--out",
                                str(out)], capsys)
    assert rc == 0 and "target=engine" in printed
    assert "target engine: dropped preserve-tokens" in printed
    assert "the full plan (target sysq, not exportable) gives" in printed
    assert "reloaded (transformers (compressed-tensors)): perplexity" in printed
    verify = json.loads((out / "quantize.json").read_text())["verify"]
    assert abs(verify["ratio_to_sysq"] - 1) < 0.005    # per-token scales round slightly differently there
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["format"] == "int-quantized"
    # --no-compare: the same engine plan, without the full plan's second mitigate and quantize
    rc, printed, _ = _quantize([*common, "--recipe", "w8a8-static", "--format", "compressed-tensors", "--no-compare"],
                               capsys)
    assert rc == 0 and "target engine: dropped preserve-tokens" in printed and "full plan" not in printed
    # a sysq-target plan cannot be exported: refused by name, nothing written
    rc, _, err = _quantize([*common, "--recipe", "w8a8-static", "--format", "compressed-tensors", "--target", "sysq",
                            "--mitigate", "rotate+smooth+preserve-tokens", "--out", str(tmp_path / "no")], capsys)
    assert rc == 2 and "run-time preserved-token rule" in err and "online down_proj Hadamard" in err
    assert not (tmp_path / "no").exists()


def test_w4a16_default_runs_learned_rounding_prints_its_seconds_and_reloads(setup, tmp_path, capsys):
    """The README's INT4 path: `sysq quantize --recipe w4a16` under the default auto is learned rounding alone
    (float zero points, g64, 200 steps per layer under bf16 autocast, per-token loss), its seconds printed; the folder reloads with
    the same logits and its plan.yaml carries the step's settings."""
    _, _, common = setup
    out = tmp_path / "q4"
    rc, printed, _ = _quantize([*common, "--recipe", "w4a16", "--out", str(out)], capsys)
    assert rc == 0 and "mitigate=auto" in printed
    from sysq.quant.learn import bf16_native        # bf16 autocast where the CPU has it; float32 elsewhere
    amp = ", bf16 autocast" if bf16_native(torch.device("cpu")) else ""
    attn = None if amp else 100         # without native bf16 the attention's linears train in the first 100 steps
    steps = "200 steps" + ("" if amp else " (100 for the attention)")
    assert f"learned rounding: 2 layers x {steps} (batch 1 of 2 windows, loss token, seed 0{amp})" in printed
    assert "asym float-zero g64" in printed and "logits max |diff| 0" in printed
    plan = yaml.safe_load((out / "plan.yaml").read_text())
    assert plan["rounding"] == "learned" and plan["search"] is None and plan["smooth"] is None
    assert plan["learned"] == {"steps": 200, "batch_size": 1, "loss": "token", "zero_point": "float", "group_size": 64,
                               "amp": "bf16" if amp else None, "act_clip": False, "lr": None, "attn_steps": attn,
                               "device": "cpu"}


def test_script_takes_the_same_arguments_and_bad_recipes_exit_2(setup, tmp_path, capsys):
    folder, text, common = setup
    spec = importlib.util.spec_from_file_location("quantize_script", ROOT / "scripts" / "quantize.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rc = script.main(["--quiet", *common, "--recipe", "w4a16-pc", "--mitigate", "none"])
    assert rc == 0 and "w=int4 asym channel" in capsys.readouterr().out
    assert script.main(["--model", str(folder), "--recipe", "w9a9"]) == 2
    assert "unknown recipe 'w9a9'" in capsys.readouterr().err
    assert cli_main(["quantize", "--model", str(folder), "--recipe", "bnb-int8", "--out", str(tmp_path / "x")]) == 2
