#!/usr/bin/env bash
# .gpu/whl2p (ignored, 2.5 MiB): auto-round 0.16.1 and what it needs beyond the device image (datasets, dill,
# multiprocess; the image has pyarrow, pandas, xxhash, accelerate), and gguf 0.19.0 to read the default model.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gpu/whl2p
python3 -m pip download -q --no-deps -d .gpu/whl2p auto-round==0.16.1 datasets==5.2.0 dill==0.4.1 \
  multiprocess==0.70.19 gguf==0.19.0
du -sh .gpu/whl2p
