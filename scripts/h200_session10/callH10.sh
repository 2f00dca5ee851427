# call H10 (issue 12; one H200, carry .gpu/whl1; ~2.5 min): where the final tree's detect spends its host time
# (detect_where.py: 3 reps, torch.profiler's device table, cProfile by own and cumulative time).
source scripts/h200_session5/env.sh
R=/tmp/resH10; mkdir -p $R
timeout 200 python3 scripts/h200_session9/detect_where.py --reps 3 --kernels split --top 60 > $R/where.txt 2>&1
echo "where rc $?"
cp -r $R/* $OUT/
grep -E "^\| |profiled|cProfiled" $R/where.txt
