"""The decode GEMV kernels, run in Triton's CPU interpreter in a subprocess (tests/gemv_cases.py: the
interpreter has to be on before triton is imported, which must not leak into the other tests)."""
import subprocess
import sys
from pathlib import Path

import pytest

from interpreter import run_cases

HERE = Path(__file__).resolve().parent


def test_gemv_kernels_in_the_triton_interpreter():
    run_cases("gemv_cases.py")


def test_gemv_is_off_on_the_cpu_without_the_interpreter(monkeypatch):
    from sysq.quant import gemv
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not gemv.available("cpu")
    monkeypatch.setenv("SYSQ_GEMV", "0")
    assert not gemv.available("cuda")


def test_cuda_takes_the_int8_gemv_and_keeps_tinygemm_for_int4_unless_asked(monkeypatch):
    pytest.importorskip("triton")
    from sysq.quant import gemv
    monkeypatch.delenv("SYSQ_GEMV", raising=False)
    assert gemv.available("cuda", "int8") and not gemv.available("cuda", "int4")   # H200: int4 GEMV < tinygemm
    monkeypatch.setenv("SYSQ_GEMV", "int4")
    assert gemv.available("cuda", "int4")


def test_bench_gemv_runs_at_a_tiny_size_on_the_cpu(tmp_path):
    pytest.importorskip("triton")
    import json
    r = subprocess.run([sys.executable, str(HERE.parent / "scripts" / "bench_gemv.py"), "--device", "cpu",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=HERE.parent)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    rows = json.loads((tmp_path / "bench_gemv.json").read_text())["rows"]
    sysq_rows = [x for x in rows if x["kernel"].startswith("sysq Triton")]
    assert len(sysq_rows) == 8 and not any("error" in x for x in rows)    # int4 fma, nibble, int8, scaled per shape
    for x in sysq_rows:     # fp32 accumulation of the exact codes; the scaled op also rounds its output to bf16
        assert x["max_rel_err"] < (2 ** -8 if "scaled" in x["kernel"] else 1e-5), x


def test_sweep_gemv_runs_at_a_tiny_size_and_writes_a_table_gemv_reads(tmp_path, monkeypatch):
    """(gemv reads SYSQ_GEMV_CONFIGS at import: the same load_table.)"""
    pytest.importorskip("triton")
    import json
    r = subprocess.run([sys.executable, str(HERE.parent / "scripts" / "sweep_gemv.py"), "--device", "cpu",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=HERE.parent)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    rows = json.loads((tmp_path / "sweep_gemv.json").read_text())["rows"]
    assert not any("error" in x for x in rows)
    assert {x["kernel"] for x in rows} >= {"bf16 F.linear", "today (autotuned)", "candidate"}
    assert all(x["max_rel_err"] < 2 ** -7 for x in rows)      # int codes of bf16 weights, bf16 outputs
    from sysq.quant import gemv
    monkeypatch.setattr(gemv, "_ACTIVE", gemv.load_table(str(tmp_path / "gemv_configs.json")))
    assert gemv.tuned("int8", 1, 256, 128)["BLOCK_K"] == 256 and gemv.tuned("int4", 1, 512, 96)["GPC"] == 2
