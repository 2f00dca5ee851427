"""The fused Triton reduction of detect's sites, run in Triton's CPU interpreter in a subprocess
(tests/reduce_cases.py: the interpreter has to be on before triton is imported, which must not leak into the
other tests)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def test_fused_reduction_in_the_triton_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")])}
    env.pop("SYSQ_REDUCE", None)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", str(HERE / "reduce_cases.py")],
                       env=env, capture_output=True, text=True, timeout=600, cwd=HERE.parent)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout


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
