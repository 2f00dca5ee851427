# call A10 (issue 12; one H200, carry .gpu/whl1; ~5 min): this tree's detect at 8B, as the scale bench times it
# (11 reps) and as detect_where times it (9 reps), then the device time of one detect by launching line.
source scripts/h200_session5/env.sh
R=/tmp/resA10; mkdir -p $R
timeout 150 python3 scripts/bench_scale.py --config 8b --batch-size 8 --reps 11 --steps forward,detect \
  --out $R/detect-b8 > $R/detect-b8.log 2>&1; echo "scale rc $?"
timeout 120 python3 scripts/h200_session9/detect_where.py --quick --reps 9 --kernels split > $R/where.txt 2>&1
echo "where rc $?"
timeout 150 python3 scripts/h200_session10/detect_stacks.py > $R/stacks.txt 2>&1; echo "stacks rc $?"
cp -r $R/* $OUT/
grep -E "^config|^\| (forward|detect)" $R/detect-b8.log | cut -c1-300
grep -E "^\| " $R/where.txt
grep -v "USDT\|Warning\|warn" $R/stacks.txt | head -120
