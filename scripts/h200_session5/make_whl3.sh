#!/usr/bin/env bash
# .gpu/whl3 (ignored), carried by call I5: llm-compressor 0.14.0.1 (pure Python; its other needs are in whl1 / whl2
# or on the device image) and bitsandbytes 0.50.2 for Python 3.12 / manylinux, repacked with the cuda130 library only.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-python3}
tmp=$(mktemp -d)
mkdir -p .gpu/whl3
"$py" -m pip download -q --no-deps -d .gpu/whl3 llmcompressor==0.14.0.1
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$tmp" bitsandbytes==0.50.2
"$py" scripts/h200_session5/repack_bnb.py "$tmp"/bitsandbytes-0.50.2-*.whl .gpu/whl3
rm -rf "$tmp"
du -sh .gpu/whl3
