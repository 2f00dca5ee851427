"""Run a file of test cases in Triton's CPU interpreter, in a subprocess: the interpreter has to be on before
triton is first imported, and must not leak into the other tests."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def run_cases(name: str, timeout: int = 900, drop_env: tuple = ()) -> None:
    """pytest on tests/<name> with TRITON_INTERPRET=1: every case must pass, none may be skipped."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")])}
    for k in drop_env:
        env.pop(k, None)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", str(HERE / name)],
                       env=env, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout
