"""The fused Triton reduction of detect's sites, run in Triton's CPU interpreter in a subprocess
(tests/reduce_cases.py: the interpreter has to be on before triton is imported, which must not leak into the
other tests)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from interpreter import run_cases

HERE = Path(__file__).resolve().parent


@pytest.mark.long(97)
def test_fused_reduction_in_the_triton_interpreter():
    run_cases("reduce_cases.py", timeout=600,
              drop_env=("SYSQ_REDUCE", "SYSQ_REDUCE_KERNEL", "SYSQ_REDUCE_TILE", "SYSQ_REDUCE_TOKEN_TILE"))


def test_the_fused_reduction_is_chosen_on_cuda_only(monkeypatch):
    pytest.importorskip("triton")
    from sysq.capture import fused
    monkeypatch.delenv("SYSQ_REDUCE", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert fused("cuda") and not fused("cpu")
    monkeypatch.setenv("SYSQ_REDUCE", "triton")
    assert not fused("cpu")                 # no interpreter: the CPU cannot run it
    monkeypatch.setenv("SYSQ_REDUCE", "torch")
    assert not fused("cuda")


def test_the_kernel_design_is_read_from_the_environment():
    """SYSQ_REDUCE_KERNEL / SYSQ_REDUCE_TILE pick the design and its tile once, when the module is imported (what
    scripts/h200_session8/callE8.sh relies on for bench_scale)."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "SYSQ_REDUCE_KERNEL": "wide", "SYSQ_REDUCE_TILE": "4,8,32,2",
           "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    code = "from sysq import _reduce_triton as R; print(R.VARIANT, R.BLOCK_T, R.TOKENS, R.BLOCK_C, R.NUM_WARPS, " \
           "R.ROWWISE, R.PREFETCH)"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["wide", "4", "8", "32", "2", "1", "1"], r.stdout + r.stderr[-2000:]
