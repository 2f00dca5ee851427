# call J7 (after scripts/h200_session5/callT1.sh and callT2.sh on the same fresh machine; carry .gpu/c .gpu/whl3
# .gpu/data .gpu/data2). Issue 12: the SmolLM2 same-report check (CPU in-memory report against the GPU forms) for
# this tree's detect. Issue 15: w4a4+kv4 on 32 calibration windows, two parts only (I7's seven side by side were all
# stopped before finishing), both per-token A4: weights in groups of 32; the per-token loss (ag64 met at 8 windows in I5).
source scripts/h200_session5/env.sh
R=/tmp/res7j; mkdir -p $R
( I7_DRY=1 I7_PARTS="${J7_PARTS:-a4-g32 a4-tl}" PART_S=${PART_S:-400} R=$R bash scripts/h200_session7/callI7.sh > $R/i7.out 2>&1 ) &
timeout 300 python3 scripts/check_detect_same.py --ref this --skip-sequential --gpu cuda > $R/same.log 2>&1; echo "same rc $?"
cp $R/same.log $OUT/; tail -8 $R/same.log
wait
cat $R/i7.out | tail -c 2500
