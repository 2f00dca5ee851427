"""Peer libraries that pin their own versions, run in their own virtual environments, measured by ours.

A peer row of the comparison grid runs the peer's own quantizer in a subprocess (`.venvs/NAME/bin/python`, made
by `scripts/peers/make_venv.sh NAME`) on sysq's calibration windows (passed as a file of token ids), writes the
checkpoint the peer ships, and hands it back: this process loads it with plain transformers and measures it
with the same evaluator, windows and tasks as every other row.

    info = run_peer("llmcompressor", "llmcompressor_quantize.py", {"scheme": "awq-w4a16", ...}, out)
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path

import torch

from sysq.errors import SysqError

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent / "peer_scripts"


def venv_python(name: str) -> Path:
    """The peer's interpreter; a clear error with the command that makes it when it is missing."""
    root = Path(os.environ.get("SYSQ_PEER_VENVS", ROOT / ".venvs"))
    py = root / name / "bin" / "python"
    if not py.is_file() or not (root / name / ".complete").is_file():
        raise SysqError(f"the {name} peer needs its own virtual environment at {root / name}; make it with "
                        f"`bash scripts/peers/make_venv.sh {name}` (downloads the peer and its pinned packages)")
    return py


def run_peer(venv: str, script: str, spec: dict, windows: torch.Tensor, out: Path, quiet: bool = False) -> dict:
    """Run `peer_scripts/SCRIPT SPEC.json` in the peer's venv with token windows [n, seqlen] (calibration or
    evaluation, as the script says); returns the OUT/peer.json it writes."""
    py = venv_python(venv)
    out = Path(out).resolve()                 # the peer runs in a temporary folder: a relative OUT would land there
    with tempfile.TemporaryDirectory(prefix="sysq-peer-") as tmp:
        ids = Path(tmp) / "windows.pt"
        torch.save(windows.cpu().clone(), ids)
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps({**spec, "windows": str(ids), "out": str(out)}))
        # the peer's own environment: sysq's path and its TQDM_DISABLE stay out (vLLM divides by a bar's total)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "TQDM_DISABLE")}
        cmd = [str(py), str(SCRIPTS / script), str(spec_path)]
        log.info("peer %s: %s", venv, " ".join(cmd))
        proc = subprocess.run(cmd, env=env, cwd=tmp, text=True,
                              stdout=subprocess.PIPE if quiet else None, stderr=subprocess.STDOUT if quiet else None)
        if proc.returncode != 0:
            lines = (proc.stdout or "").splitlines()
            errors = [ln for ln in lines if "Error" in ln and "raise" not in ln][-5:]
            tail = "\n".join(errors or lines[-20:]) if quiet else "(its output is above)"
            raise SysqError(f"peer {venv} ({script}) failed with exit code {proc.returncode}: {tail}")
    info_path = out / "peer.json"
    if not info_path.is_file():
        raise SysqError(f"peer {venv} ({script}) wrote no {info_path}")
    return json.loads(info_path.read_text())


def local_folder(model) -> Path:
    """The float HF folder a loaded model came from (peers load it themselves)."""
    path = Path(getattr(model, "_sysq_source", "") or getattr(model.config, "_name_or_path", ""))
    if not (path / "config.json").is_file():
        raise SysqError(f"peer rows need the model as a local folder; {path or 'this model'} is not one (load an "
                        "alias or a folder)")
    return path



def vllm_perplexity(folder, windows, out, quiet: bool = False, dtype: str = "float32") -> dict:
    """Perplexity of `folder` served by vLLM (its CPU build here) on sysq's evaluation windows (a sysq.data.Windows):
    the engine's own log-likelihoods of every predicted token (evaluation/peer_scripts/vllm_perplexity.py)."""
    # absolute: the peer runs in a temporary folder, and vLLM reads a relative path as a hub id
    return run_peer("vllm", "vllm_perplexity.py", {"model": str(Path(folder).resolve()), "dtype": dtype}, windows.ids, out, quiet)
