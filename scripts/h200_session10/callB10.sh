# call B10 (issue 12; one H200, carry .gpu/whl1 .gpu/t_1before.tar (d81de1f) .gpu/t_2after.tar (sysq_mass); ~7 min):
# the attention mass against the probabilities and eager's report, then the two trees' detect in turn (2 rounds,
# 9 reps each), the scale bench's detect row and the launching-line profile on this tree.
source scripts/h200_session5/env.sh
R=/tmp/resB10; mkdir -p $R
timeout 150 python3 scripts/h200_session10/check_mass.py > $R/check_mass.txt 2>&1; echo "check rc $?"
grep -v "USDT\|Warn\|warn" $R/check_mass.txt | tail -12
ROUNDS=2 WHERE_ARGS="--kernels split --reps 9" source scripts/h200_session9/ab.sh
for f in $R/t_*.txt; do echo "== $(basename $f)"; grep -E "^\| (forward|detect)" $f | cut -c1-250; done
timeout 120 python3 scripts/bench_scale.py --config 8b --batch-size 8 --reps 11 --steps forward,detect \
  --out $R/detect-b8 > $R/detect-b8.log 2>&1; echo "scale rc $?"
grep -E "^\| (forward|detect)" $R/detect-b8.log | cut -c1-300
timeout 120 python3 scripts/h200_session10/detect_stacks.py > $R/stacks.txt 2>&1; echo "stacks rc $?"
cp -r $R/* $OUT/
grep -v "USDT\|Warning\|warn" $R/stacks.txt | head -100
