# call I9 (issue 12; one H200, carry .gpu/whl1; ~1.5 min): the scale bench's forward and detect rows at 8B, 11 reps
source scripts/h200_session5/env.sh
R=/tmp/resI9; mkdir -p $R
timeout 150 python3 scripts/bench_scale.py --config 8b --batch-size 8 --reps 11 --steps forward,detect \
  --out $R/detect-b8 > $R/detect-b8.log 2>&1; echo "scale rc $?"
cp -r $R/* $OUT/
grep -E "^config|^\| (forward|detect)" $R/detect-b8.log | cut -c1-300
