# call G9 (issue 12; one H200, carry .gpu/whl1, .gpu/t_1before.tar (698e8d0's sysq), .gpu/t_2after.tar (this tree's);
# ~4 min): before / after alternating (2 rounds, 9 reps, split and fused in turn), then the scale bench's detect rows
# with the defaults (forward, detect, profile; 5 reps).
source scripts/h200_session5/env.sh
R=/tmp/resG9; mkdir -p $R
ROUNDS=2 WHERE_ARGS="--reps 9 --kernels fused,split" source scripts/h200_session9/ab.sh
timeout 150 python3 scripts/bench_scale.py --config 8b --batch-size 8 --reps 5 --steps forward,detect,profile \
  --out $R/detect-b8 > $R/detect-b8.log 2>&1; echo "scale rc $?"
cp -r $R/* $OUT/
for f in $R/t_*.txt; do echo "== $(basename $f)"; grep -E "^\| (forward|detect)" $f | cut -c1-250; done
grep -E "^\| (forward|detect|profile)|fused site" $R/detect-b8.log | cut -c1-300
grep -B1 -A7 "^| phase" $R/detect-b8.log | head -10
