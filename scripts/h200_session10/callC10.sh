# call C10 (issue 12; one H200, carry .gpu/whl1 .gpu/t_2after.tar (sysq_mass) .gpu/t_3batch.tar (+ batched launches);
# ~7 min): the mass and batching checks, the two trees' detect in turn (2 rounds, 9 reps), the scale bench's detect
# row, and the device's time and idle time by launching / host line on this tree.
source scripts/h200_session5/env.sh
R=/tmp/resC10; mkdir -p $R; rm -f .gpu/t_1before.tar
timeout 150 python3 scripts/h200_session10/check_mass.py > $R/check_mass.txt 2>&1; echo "check rc $?"
grep -v "USDT\|Warn\|warn" $R/check_mass.txt | tail -6
ROUNDS=2 WHERE_ARGS="--kernels split --reps 9" source scripts/h200_session9/ab.sh
for f in $R/t_*.txt; do echo "== $(basename $f)"; grep -E "^\| (forward|detect)" $f | cut -c1-250; done
timeout 120 python3 scripts/bench_scale.py --config 8b --batch-size 8 --reps 11 --steps forward,detect \
  --out $R/detect-b8 > $R/detect-b8.log 2>&1; echo "scale rc $?"
grep -E "^\| (forward|detect)" $R/detect-b8.log | cut -c1-300
timeout 120 python3 scripts/h200_session10/detect_stacks.py > $R/stacks.txt 2>&1; echo "stacks rc $?"
cp -r $R/* $OUT/
grep -v "USDT\|Warning\|warn" $R/stacks.txt | grep -A40 "## detect"
