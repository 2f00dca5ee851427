# call E7b (issue 12; same machine after J7, or any one-H200 machine: no carry): callE7.sh without the SmolLM2 check
# (J7 ran it) and with two tile configs, to fit the session's device time: the fused reductions alone, then the 8B
# detect against a plain forward (fused and torch form, with the profile).
source scripts/h200_session5/env.sh
R=/tmp/res7e; mkdir -p $R
timeout 80 python3 scripts/bench_reduce.py --reps 10 --tiles 16,64,128,8 32,64,128,8 --out $R/reduce > $R/reduce.log 2>&1; echo "reduce rc $?"
timeout 230 python3 scripts/bench_scale.py --config 8b --batch-size 8 --steps forward,detect,profile --reduce auto,torch \
  --out $R/detect-b8 > $R/detect-b8.log 2>&1; echo "scale rc $?"
cp -r $R/* $OUT/
cat $R/reduce.log | tail -20
grep -E "^\| (forward|detect|profile)|fused site|x forward|Error|error" $R/detect-b8.log | head -12
grep -A14 "^op table" $R/detect-b8.log | cut -c1-60,100-200 | head -16
