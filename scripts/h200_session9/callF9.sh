# call F9 (issue 12; one H200, carry .gpu/whl1, .gpu/t_1before.tar (698e8d0's sysq), .gpu/t_2after.tar (this tree's);
# ~4 min): as D9 (before / after, alternating processes, 9 reps, split and fused in turn), then this tree's profile
# with the cProfile of sysq's functions by cumulative time.
source scripts/h200_session5/env.sh
R=/tmp/resF9; mkdir -p $R
ROUNDS=2 WHERE_ARGS="--reps 9 --kernels fused,split" source scripts/h200_session9/ab.sh
timeout 150 python3 scripts/h200_session9/detect_where.py --reps 3 --kernels split --top 60 > $R/profile.txt 2>&1
echo "profile rc $?"
cp -r $R/* $OUT/
for f in $R/t_*.txt; do echo "== $(basename $f)"; grep -E "^\| (forward|detect)" $f | cut -c1-250; done
grep -E "^\| |profiled|cProfiled" $R/profile.txt
