# call H9 (issue 12; one H200, carry .gpu/whl1, .gpu/t_1before.tar (698e8d0's sysq), .gpu/t_2after.tar (this tree's);
# ~3 min): the scale bench's detect rows (forward, detect, profile; 7 reps after a full-size warm-up), then before /
# after alternating (1 round, 9 reps, split and fused in turn).
source scripts/h200_session5/env.sh
R=/tmp/resH9; mkdir -p $R
timeout 150 python3 scripts/bench_scale.py --config 8b --batch-size 8 --reps 7 --steps forward,detect,profile \
  --out $R/detect-b8 > $R/detect-b8.log 2>&1; echo "scale rc $?"
grep -E "^\| (forward|detect|profile)" $R/detect-b8.log | cut -c1-300
ROUNDS=1 WHERE_ARGS="--reps 9 --kernels fused,split" source scripts/h200_session9/ab.sh
cp -r $R/* $OUT/
for f in $R/t_*.txt; do echo "== $(basename $f)"; grep -E "^\| (forward|detect)" $f | cut -c1-250; done
grep -B1 -A7 "^| phase" $R/detect-b8.log | head -10
