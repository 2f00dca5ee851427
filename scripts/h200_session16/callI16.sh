# call I16 (issue 12; one H200, fresh machine; carry .gpu/whl1; ~3 min): site_lists' INT8 channel lists without the
# sort of every nonzero entry: the A/B in one process (ab_site_lists.py), the timeline, and the scale bench's
# forward / detect pairs in two processes.
source scripts/h200_session5/env.sh
R=/tmp/resI16; mkdir -p $R
timeout 150 python3 scripts/h200_session16/ab_site_lists.py --reps 9 > $R/ab.log 2>&1; echo "ab rc $?"; tail -5 $R/ab.log
timeout 90 python3 scripts/h200_session11/detect_timeline.py --reps 5 > $R/timeline.log 2>&1; echo "timeline rc $?"
tail -8 $R/timeline.log
for c in p1 p2; do
  (timeout 80 python3 scripts/bench_scale.py --config 8b --batch-size 8 --reps 15 --steps forward,detect \
    --out $R/$c) > $R/$c.log 2>&1; echo "$c rc $?"
  grep -E "^\| (forward|detect)" $R/$c.log | cut -c1-420
done
cp -r $R $OUT/
