#!/usr/bin/env bash
# Build a peer library's own virtual environment (peers pin their own dependencies; the shared .venv stays
# untouched). Usage: scripts/peers/make_venv.sh NAME   ->   $SYSQ_PEER_VENVS/NAME (default .venv-peers/NAME)
#   autoround       auto-round 0.16.1 (Intel AutoRound)
#   llmcompressor   llm-compressor 0.14 (vLLM's)
# torch goes in FIRST so pip keeps the CPU wheel (override with TORCH=...); then the library with its pins.
# TORCH=system reuses the interpreter's own torch (a GPU machine's CUDA build: --system-site-packages);
# WHEELS=DIR installs offline from wheels downloaded beforehand (pip download -d DIR auto-round==0.16.1 ...).
# evaluation/peers.py runs the grid's peer jobs with this environment's python.
set -euo pipefail
name="${1:?usage: scripts/peers/make_venv.sh NAME (autoround | llmcompressor)}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
venvs="${SYSQ_PEER_VENVS:-$root/.venv-peers}"
TORCH="${TORCH:-torch==2.13.0}"
case "$name" in
  autoround) pkgs=("auto-round==0.16.1" "compressed-tensors==0.20.1") ;;   # + its llm_compressor export
  llmcompressor) pkgs=("llmcompressor==0.14.*") ;;
  *) echo "make_venv.sh: unknown peer '$name'; known: autoround, llmcompressor" >&2; exit 2 ;;
esac
venv="$venvs/$name"
pipargs=(-q)
[ -n "${WHEELS:-}" ] && pipargs+=(--no-index --find-links "$WHEELS")
if [ "$TORCH" = system ]; then
  python3 -m venv --system-site-packages "$venv"
else
  python3 -m venv "$venv"
  [ -z "${WHEELS:-}" ] && "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install "${pipargs[@]}" "$TORCH"
fi
"$venv/bin/python" -m pip install "${pipargs[@]}" "${pkgs[@]}"
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
for d in ("torch", "transformers", "auto-round", "llmcompressor", "compressed-tensors"):
    try:
        print(f"  {d} {md.version(d)}")
    except md.PackageNotFoundError:
        pass
PY
echo "built $venv"
