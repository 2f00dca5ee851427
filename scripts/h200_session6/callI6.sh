# call I6 (after scripts/h200_session5/callT1.sh and callT2.sh on the same fresh machine; carry .gpu/c .gpu/whl3
# .gpu/data .gpu/data2): issue 15's w4a16 <= 1.06x with a learned step a 2-core CPU runs in under 10 minutes.
# Every row on 32 calibration windows (last session: 32 windows, 200 x 8 steps @auto gave 1.059 / 1.041, but 200 x 8
# steps cost ~30x the 50 x 1 step that takes ~4 minutes on this CPU). The peers on the same 32 windows; sysq's
# learned step at budgets a CPU affords (N steps x 1 window), per-token loss, with and without the auto plan;
# 200 x 8 as the GPU-only reference; w4a4 per-token with the larger budget. SmolLM2-135M fp32, windows 0-39 / 40-79.
# One int4_table process per part side by side, each stopped at 540 s, then one merged table.
[ -n "$I6_DRY" ] || source scripts/h200_session5/env.sh
source scripts/h200_session5/parts.sh
R=${R:-/tmp/res6}; mkdir -p $R
export OMP_NUM_THREADS=1
T=${T:-"python3 scripts/int4_table.py --device cuda --quiet --time-limit 420"}
G=w4a16-g64+fz
P=(
  "peer-c32 --configs fp,autoround-w4a16-g64 --calib-n 32"
  "peers-c32 --configs fp,llmc-gptq-w4a16-g64,llmc-awq-w4a16-g64,bnb-nf4 --calib-n 32"
  "l50-c32 --configs fp,$G+learned50x1+tokenloss --calib-n 32"
  "l100-c32 --configs fp,$G+learned100x1+tokenloss --calib-n 32"
  "l200-c32 --configs fp,$G+learned200x1+tokenloss --calib-n 32"
  "l100-c16 --configs fp,$G+learned100x1+tokenloss --calib-n 16"
  "l100-auto-c32 --configs fp,$G+learned100x1+tokenloss@auto+learned --calib-n 32"
  "l200x8-c32 --configs fp,$G+learned200x8+tokenloss --calib-n 32"
  "l100-g128-c32 --configs fp,w4a16-g128+fz+learned100x1+tokenloss --calib-n 32"
  "w4a4-c32 --configs fp,w4a4+g64+kv4g32+learned200x8@auto+learned --calib-n 32"
)
PARTS=$I6_PARTS MERGE_ARGS="--calib-n 32" run_parts i6 540
