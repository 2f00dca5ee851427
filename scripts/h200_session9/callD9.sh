# call D9 (issue 12; one H200, carry .gpu/whl1, .gpu/t_1before.tar (698e8d0's sysq), .gpu/t_2after.tar (this tree's);
# ~4 min): detect at 8B before / after this session's changes, alternating processes, 9 reps each (median, min,
# the report-building tail, full GC pauses), both kernel designs timed in turn.
source scripts/h200_session5/env.sh
R=/tmp/resD9; mkdir -p $R
ROUNDS=2 WHERE_ARGS="--reps 9 --kernels fused,split" source scripts/h200_session9/ab.sh
cp -r $R/* $OUT/
for f in $R/t_*.txt; do echo "== $(basename $f)"; grep -E "^\| (forward|detect)" $f | cut -c1-250; done
