# call F16 (issue 12; one H200, fresh machine; carry .gpu/whl1; ~3 min): where detect's time goes now, on this
# session's machines (1.61-1.81x a forward): the timeline of host marks against device events (detect_timeline.py,
# eleventh session) and bench_scale's profile step (the op table by device time, host reads per phase).
source scripts/h200_session5/env.sh
R=/tmp/resF16; mkdir -p $R
timeout 120 python3 scripts/h200_session11/detect_timeline.py --reps 5 > $R/timeline.log 2>&1; echo "timeline rc $?"
tail -30 $R/timeline.log
timeout 200 python3 scripts/bench_scale.py --config 8b --batch-size 8 --reps 5 --steps forward,detect,profile \
  --out $R/prof > $R/prof.log 2>&1; echo "profile rc $?"
grep -v "^|" $R/prof.log | tail -45 | cut -c1-250
cp -r $R $OUT/
