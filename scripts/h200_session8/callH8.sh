# call H8 (issue 12, branch detecthost; any one-H200 machine, no carry, under 4 minutes): detect's host work cut (on
# the CPU, scripts/detect_host_ops.py: aten ops per batch 5,199 -> 3,265 in the forward, 1,100 -> 572 in the records,
# 2,304 -> 1,112 once per detect; docs/DETECT_FUSED.md "Eighth session"), measured here: the 8B detect against a plain
# forward (fused pass) and the profile's host-op table per phase. Before (call E7b): forward 5,373 ops / 0.156 s per
# batch, records 1,100 / 0.036 s, rest 2,937 / 0.123 s; detect 0.54 s, 2.28x a forward (goal <= 1.5x).
source scripts/h200_session5/env.sh
R=/tmp/resH8; mkdir -p $R
timeout 220 python3 scripts/bench_scale.py --config 8b --batch-size 8 --steps forward,detect,profile --reduce auto \
  --out $R/detect-b8 > $R/detect-b8.log 2>&1; echo "scale rc $?"
cp -r $R/* $OUT/
grep -E "^\| (forward|detect|profile)|fused site|x forward|Error|error" $R/detect-b8.log | head -12
grep -B1 -A7 "^| phase" $R/detect-b8.log | head -10
grep -A14 "^op table" $R/detect-b8.log | cut -c1-60,100-200 | head -16
