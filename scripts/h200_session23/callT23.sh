# call T23 (after scripts/h200_session20/callA20.sh and callB20.sh on the same machine; carry .gpu/b): issue 15's INT4
# table in one run for the new AVX2-CPU budget: auto-round at its defaults (the strongest peer of call I6), sysq's
# w4a16 as auto runs it on this GPU (w4a16@auto: 200 x 1 under bf16 autocast) and as auto runs it on a CPU without
# native bf16 (200 steps, the attention's linears in the first 100, float32: named in full). SmolLM2-135M fp32, 32
# calibration windows, held-out WikiText-2 test windows 0-39 / 40-79; one int4_table process per part, then one table.
source scripts/h200_session20/env.sh
source scripts/h200_session5/parts.sh
R=${R:-/tmp/res23t}; mkdir -p $R
export OMP_NUM_THREADS=1
T=${T:-"python3 scripts/int4_table.py --device cuda --quiet --time-limit 380"}
P=(
  "peer-c32 --configs fp,autoround-w4a16-g64 --calib-n 32"
  "a100-c32 --configs fp,w4a16-g64+fz+learned200x1a100+tokenloss --calib-n 32"
  "auto-c32 --configs fp,w4a16@auto --calib-n 32"
)
MERGE_ARGS="--calib-n 32" run_parts t23 420
