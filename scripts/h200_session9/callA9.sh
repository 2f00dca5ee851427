# call A9 (issue 12; one H200, carry .gpu/whl1; ~3 min): where detect's 0.48 s goes at 8B (forward 0.24 s):
# host vs device per kernel design, the attention batch's share, a full-detect device-busy sum and a cProfile.
source scripts/h200_session5/env.sh
R=/tmp/resA9; mkdir -p $R
timeout 300 python3 scripts/h200_session9/detect_where.py --batch-size 8 > $R/where-b8.txt 2>&1; echo "where rc $?"
cp -r $R/* $OUT/
grep -E "^\| |profiled|cProfiled" $R/where-b8.txt
