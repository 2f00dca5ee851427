# call E12 (issue 12; one H200; carry .gpu/whl1; ~1.5 min): where detect's host time goes on the 8B shape: cProfile of
# one detect (after 3 timed runs), by own time and by cumulative time.
source scripts/h200_session5/env.sh
R=/tmp/resE12; mkdir -p $R
timeout 150 python3 scripts/bench_detect_gc.py --device cuda --config 8b --windows 16 --seqlen 512 --reps 3 \
  --forms paused --cprofile 60 > $R/cprofile.log 2>&1; echo "rc $?"
grep -vi warn $R/cprofile.log | grep -A75 "^| collector" | cut -c1-220
cp -r $R $OUT/
