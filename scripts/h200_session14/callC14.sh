# call C14 (right after B14, same machine; carry .gpu/b): the GGUF's last piece, then side by side on the one H200
# (SmolLM2-135M fp32, WikiText-2 test, held-out windows 0-39 / 40-79):
#  * issue 15: `w4a4+kv4g32@auto`, the default after the fix of 477eddc (auto searches w4a4's plan on the g32 weights
#    its learned step quantizes), never run on a GPU; and each config in $W4A4_NEW (learned budgets that fit
#    the CPU's 10-minute bound), each on 32 calibration windows (quantize's default);
#  * issue 11: static FP8 with none and the measured auto plan (WikiText-2 test 512 x 40, calibration 16 x 512), the
#    H200's number against the CPU's 1.0099x.
source scripts/h200_session14/env.sh
source scripts/h200_session5/parts.sh
R=${R:-/tmp/res14}; mkdir -p $R
export OMP_NUM_THREADS=1
( timeout 500 python3 scripts/mitigation_table.py --device cuda --rows w8a8-fp8-static --cols none,auto --extra fp \
    --sensitivity '' --quiet --out $R/fp8 > $R/fp8.log 2>&1; echo "fp8 rc $?" >> $R/fp8.log ) &
T="python3 scripts/int4_table.py --device cuda --quiet --time-limit 470"
P=("w4a4 --configs fp,w4a4+kv4g32@auto --calib-n 32")
k=0; for c in $W4A4_NEW; do k=$((k+1)); P+=("w4a4n$k --configs fp,$c --calib-n 32"); done
MERGE_ARGS="--calib-n 32" run_parts c14 520
wait
tail -5 $R/fp8.log; cat $R/fp8/*.md 2>/dev/null | head -20
cp -r $R/fp8 $OUT/ 2>/dev/null; cp $R/fp8.log $OUT/
