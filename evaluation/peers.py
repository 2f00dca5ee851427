"""Peer libraries that pin their own dependencies, run in their own virtual environment as a subprocess.

A peer row of the grid quantizes with the peer library itself, on the grid's own calibration token windows,
and the main process measures the checkpoint it writes with the same evaluator, on the same windows, as every
other row. The mechanism is generic; each peer is one `Peer` entry and one job script.

Contract of a job (evaluation/peer_jobs/<job>.py, run with the peer environment's python, no sysq import):

    python JOB --model HF_DIR --calib CALIB.json --out OUT_DIR --settings '{"bits": 4, ...}'

  HF_DIR      the float model as a plain transformers folder
  CALIB.json  {"input_ids": [[...], ...]}: the calibration windows exactly as sysq rows see them (BOS included)
  OUT_DIR     a folder plain transformers loads: dequantized float weights, or a compressed-tensors checkpoint
              (loaded with sysq.quant.export.load_with_transformers), plus peer.json:
              {"library": "auto-round 0.16.1", "format": "...", "seconds": ..., "settings": {...}}

Environments: scripts/peers/make_venv.sh NAME builds $SYSQ_PEER_VENVS/NAME (default .venv-peers/NAME beside
the repo root). Checkpoints are kept under the grid's OUT/peers/<key>, the key a hash of the peer, its settings,
the model and the calibration windows, so a second evaluation set reuses them instead of quantizing again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sysq.errors import SysqError
from sysq.io import atomic_dir, atomic_write_text

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
JOBS = Path(__file__).resolve().parent / "peer_jobs"


@dataclass(frozen=True)
class Peer:
    """One peer configuration of the grid."""

    name: str                        # the grid's configuration name
    venv: str                        # scripts/peers/make_venv.sh NAME
    job: str                         # evaluation/peer_jobs/<job>.py (or a path to a script)
    settings: dict = field(default_factory=dict)
    bits: dict = field(default_factory=dict)    # for the table's bits record
    timeout_s: int = 4 * 3600


_AR = dict(bits=4, sym=False, iters=200, lr=None, batch_size=8, seed=0)   # auto-round's defaults, asymmetric

PEERS: dict[str, Peer] = {p.name: p for p in (
    Peer("autoround-w4a16-g64", "autoround", "autoround", {**_AR, "group_size": 64},
         {"weight": 4, "act": 32, "group_size": 64}),
    Peer("autoround-w4a16-g128", "autoround", "autoround", {**_AR, "group_size": 128},
         {"weight": 4, "act": 32, "group_size": 128}),
    # the CPU budget: 50 SignSGD steps per layer on batches of 2 windows (the GPU command uses the defaults above)
    Peer("autoround-w4a16-g64-cpu", "autoround", "autoround", {**_AR, "group_size": 64, "iters": 50, "batch_size": 2},
         {"weight": 4, "act": 32, "group_size": 64}),
    Peer("autoround-w4a16-g128-cpu", "autoround", "autoround",
         {**_AR, "group_size": 128, "iters": 50, "batch_size": 2}, {"weight": 4, "act": 32, "group_size": 128}),
)}


def register(peer: Peer) -> Peer:
    """Add a peer configuration (evaluation.compare routes its name here)."""
    PEERS[peer.name] = peer
    return peer


def venv_python(venv: str) -> Path:
    root = Path(os.environ.get("SYSQ_PEER_VENVS", ROOT / ".venv-peers"))
    py = root / venv / "bin" / "python"
    if not py.is_file():
        raise SysqError(f"the peer environment {venv!r} is missing ({py}); build it once with "
                        f"`scripts/peers/make_venv.sh {venv}` (or point SYSQ_PEER_VENVS at where it is)")
    return py


def model_folder(spec: str) -> Path:
    """The float model as a plain transformers folder (an alias is converted once by sysq.load)."""
    from sysq.models import ALIASES, _cached_alias
    if spec in ALIASES:
        return _cached_alias(spec)
    path = Path(spec).expanduser()
    if (path / "config.json").is_file():
        return path
    raise SysqError(f"a peer row needs the float model as a transformers folder; {spec!r} is not one "
                    f"(use an alias such as {', '.join(ALIASES)} or a folder with config.json)")


def checkpoint_key(peer: Peer, model: str, calib_ids) -> str:
    blob = json.dumps({"peer": asdict(peer), "model": model, "calib": calib_ids.tolist()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_job(peer: Peer, model_dir: Path, calib_ids, out: Path, quiet: bool = False) -> dict:
    """Run the peer's job in its environment; the checkpoint lands in `out` atomically. Returns peer.json."""
    py = venv_python(peer.venv)
    job = Path(peer.job) if peer.job.endswith(".py") else JOBS / f"{peer.job}.py"
    out.parent.mkdir(parents=True, exist_ok=True)
    calib_file = out.parent / f".{out.name}.calib.json"
    atomic_write_text(calib_file, json.dumps({"input_ids": calib_ids.tolist()}))
    t0 = time.perf_counter()
    with atomic_dir(out) as tmp:
        cmd = [str(py), str(job), "--model", str(model_dir), "--calib", str(calib_file), "--out", str(tmp),
               "--settings", json.dumps(peer.settings)]
        log.info("peer %s: %s", peer.name, " ".join(cmd))
        env = {**os.environ, "PYTHONNOUSERSITE": "1"}
        env.pop("PYTHONPATH", None)          # the peer sees its own environment, not sysq's tree
        res = subprocess.run(cmd, env=env, timeout=peer.timeout_s, text=True,
                             stdout=subprocess.DEVNULL if quiet else None,
                             stderr=subprocess.PIPE)
        if res.returncode != 0:
            tail = "\n".join(res.stderr.strip().splitlines()[-15:])
            raise SysqError(f"peer job {peer.name} failed (exit {res.returncode}): {tail}")
        if not quiet and res.stderr:
            sys.stderr.write(res.stderr[-4000:])
        info = json.loads((tmp / "peer.json").read_text())
        info["wall_seconds"] = round(time.perf_counter() - t0, 1)
        (tmp / "peer.json").write_text(json.dumps(info, indent=1))
    calib_file.unlink(missing_ok=True)
    return info


def load_checkpoint(path: Path, dtype: str = "float32", device: str | None = None, quiet: bool = False):
    """A peer's folder: compressed-tensors through sysq's plain-transformers loader, float folders directly."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = json.loads((path / "config.json").read_text())
    if cfg.get("quantization_config", {}).get("quant_method") == "compressed-tensors":
        from sysq.quant.export import load_with_transformers
        return load_with_transformers(path, dtype=dtype, device=device, quiet=quiet)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    return model.to(device).eval() if device else model.eval()


def quantize_with_peer(name: str, model_spec: str, calib, cache: Path, dtype: str = "float32",
                       device: str | None = None, quiet: bool = False):
    """(model, info): the peer's checkpoint for `model_spec` on `calib` (computed once per key), loaded."""
    peer = PEERS.get(name)
    if peer is None:
        raise SysqError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
    ids = getattr(calib, "ids", calib)
    folder = Path(cache) / checkpoint_key(peer, model_spec, ids)
    if (folder / "peer.json").is_file():
        info = json.loads((folder / "peer.json").read_text())
        log.info("peer %s: checkpoint reused from %s", name, folder)
    else:
        info = run_job(peer, model_folder(model_spec), ids, folder, quiet=quiet)
    model = load_checkpoint(folder, dtype, device, quiet)
    return model, {**info, "checkpoint": str(folder), "bits": peer.bits}
