# call B12 (issue 12; one H200; carry .gpu/whl1; ~2 min): detect on the 8B shape with the garbage collector paused
# (sysq.detect) and running (as before), alternating in one process: with a full collection before each run (as
# bench_scale does) and without (as a user's process).
source scripts/h200_session5/env.sh
R=/tmp/resB12; mkdir -p $R
timeout 150 python3 scripts/bench_detect_gc.py --device cuda --config 8b --windows 16 --seqlen 512 --reps 8 --collect \
  > $R/gc8b-collect.log 2>&1; echo "collect rc $?"; grep -vi warn $R/gc8b-collect.log | tail -4
timeout 150 python3 scripts/bench_detect_gc.py --device cuda --config 8b --windows 16 --seqlen 512 --reps 8 \
  > $R/gc8b.log 2>&1; echo "plain rc $?"; grep -vi warn $R/gc8b.log | tail -4
cp -r $R $OUT/
