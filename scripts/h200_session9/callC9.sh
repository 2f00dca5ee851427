# call C9 (issue 12; one H200, carry .gpu/whl1 and .gpu/t_<commit>.tar = `git archive <commit> sysq`; ~5 min): detect at
# 8B with the split kernel, each commit's sysq in turn (two rounds, one process each), then this tree's profile.
source scripts/h200_session5/env.sh
R=/tmp/resC9; mkdir -p $R
ROUNDS=2 WHERE_ARGS="--kernels split" source scripts/h200_session9/ab.sh
timeout 150 python3 scripts/h200_session9/detect_where.py --reps 3 --kernels fused,split --variants > $R/profile.txt 2>&1
echo "profile rc $?"
cp -r $R/* $OUT/
for f in $R/t_*.txt; do echo "== $(basename $f)"; grep -E "^\| (forward|detect)" $f; done
grep -E "^\| |profiled|cProfiled" $R/profile.txt
