# call D10 (issue 12; one H200, carry .gpu/whl1 .gpu/t_2after.tar (sysq_mass) .gpu/t_4nocycle.tar (+ no reference
# cycle); ~7 min): the two trees' detect in turn (2 rounds, 9 reps, no collection between reps), the scale bench's
# detect row, the mass check, and the device's time and idle time by launching / host line on this tree.
source scripts/h200_session5/env.sh
R=/tmp/resD10; mkdir -p $R; rm -f .gpu/t_1before.tar .gpu/t_3batch.tar
ROUNDS=2 WHERE_ARGS="--kernels split --reps 9" source scripts/h200_session9/ab.sh
for f in $R/t_*.txt; do echo "== $(basename $f)"; grep -E "^\| (forward|detect)" $f | cut -c1-250; done
timeout 120 python3 scripts/bench_scale.py --config 8b --batch-size 8 --reps 11 --steps forward,detect \
  --out $R/detect-b8 > $R/detect-b8.log 2>&1; echo "scale rc $?"
grep -E "^\| (forward|detect)" $R/detect-b8.log | cut -c1-300
timeout 150 python3 scripts/h200_session10/check_mass.py > $R/check_mass.txt 2>&1; echo "check rc $?"
grep -v "USDT\|Warn\|warn" $R/check_mass.txt | tail -4
timeout 120 python3 scripts/h200_session10/detect_stacks.py > $R/stacks.txt 2>&1; echo "stacks rc $?"
cp -r $R/* $OUT/
grep -v "USDT\|Warning\|warn" $R/stacks.txt | grep -A60 "## detect"
