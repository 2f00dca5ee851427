# call E7 (issue 12, branch detect12e; any machine of one H200, no carry needed beyond what the SmolLM2 check needs:
# the GGUF pieces and .gpu/data as in J7). Detect's fused reductions alone (GB/s, same values as the torch form, a
# tile sweep), the 8B detect against a plain forward (fused and torch form, with the profile), the SmolLM2
# same-report check. About 8 minutes in all; each step under 4.
source scripts/h200_session5/env.sh
R=/tmp/res7e; mkdir -p $R
timeout 200 python3 scripts/bench_reduce.py --tiles 16,64,128,8 32,64,128,8 16,128,128,4 8,64,128,4 16,64,256,8 \
  --out $R/reduce > $R/reduce.log 2>&1; echo "reduce rc $?"
timeout 230 python3 scripts/bench_scale.py --config 8b --batch-size 8 --steps forward,detect,profile --reduce auto,torch \
  --out $R/detect-b8 > $R/detect-b8.log 2>&1; echo "scale rc $?"
timeout 230 python3 scripts/check_detect_same.py --ref this --skip-sequential --gpu cuda > $R/same.log 2>&1; echo "same rc $?"
cp -r $R/* $OUT/
cat $R/reduce.log | tail -20
grep -E "^\| (forward|detect|profile)|fused site|x forward|Error|error" $R/detect-b8.log | head -12
grep -A12 "^op table" $R/detect-b8.log | cut -c1-60,100-200 | head -14
tail -8 $R/same.log
