# call I7 (after scripts/h200_session5/callT1.sh and callT2.sh on the same fresh machine; carry .gpu/c .gpu/whl3
# .gpu/data .gpu/data2): issue 15's open INT4 goals on 32 calibration windows. w4a4+kv4 with per-token A4 was 1.525 /
# 1.476 (I6: 200 x 8 steps, auto plan = rotate+smooth+clip+preserve-tokens); here: the per-token loss, more steps, finer
# weight groups, float zero points, and grouped A4 (Atom / MX-style, ag64 / ag32). w4a16 g128 was 1.070 / 1.069 with
# 100 x 1 steps: 200 x 1 and 400 x 1. w4a8 without the plan (which hurt w4a16's learned rows in I6).
# SmolLM2-135M fp32, windows 0-39 / 40-79; one int4_table process per part side by side, then one merged table.
[ -n "$I7_DRY" ] || source scripts/h200_session5/env.sh
source scripts/h200_session5/parts.sh
R=${R:-/tmp/res7}; mkdir -p $R
export OMP_NUM_THREADS=1
T=${T:-"python3 scripts/int4_table.py --device cuda --quiet --time-limit 420"}
A=w4a4+g64+kv4g32
P=(
  "a4-tl --configs fp,$A+learned200x8+tokenloss@auto+learned"
  "a4-x1tl --configs fp,$A+learned200x1+tokenloss@auto+learned"
  "a4-400 --configs fp,$A+learned400x8@auto+learned"
  "a4-g32 --configs fp,w4a4+g32+kv4g32+learned200x8@auto+learned"
  "a4-fz --configs fp,w4a4+g64+fz+kv4g32+learned200x8@auto+learned"
  "a4-ag64 --configs fp,w4a4+g64+ag64+kv4g32+learned200x8@auto+learned"
  "a4-ag32 --configs fp,w4a4+g64+ag32+kv4g32+learned200x8@auto+learned"
  "g128-200 --configs fp,w4a16-g128+fz+learned200x1+tokenloss"
  "g128-400 --configs fp,w4a16-g128+fz+learned400x1+tokenloss"
  "a8 --configs fp,w4a8+g64+fz+learned100x1+tokenloss"
)
T="$T --calib-n 32" PARTS=$I7_PARTS run_parts i7 ${PART_S:-530}       # every part on 32 calibration windows
