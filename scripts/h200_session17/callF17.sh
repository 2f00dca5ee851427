# call F17 (issue 12; one H200, fresh machine; carry .gpu/whl1; ~4 min): after the per-chunk copies (the last
# batch's records made while the device runs): the timeline once, and five processes of the scale bench's forward /
# detect pairs.
source scripts/h200_session5/env.sh
R=/tmp/resF17; mkdir -p $R
timeout 80 python3 scripts/h200_session11/detect_timeline.py --reps 5 > $R/timeline.log 2>&1; echo "timeline rc $?"
tail -8 $R/timeline.log
for c in p1 p2 p3 p4 p5; do
  (timeout 70 python3 scripts/bench_scale.py --config 8b --batch-size 8 --reps 15 --steps forward,detect \
    --out $R/$c) > $R/$c.log 2>&1; echo "$c rc $?"
  grep -E "^\| detect" $R/$c.log | cut -c1-200
done
rm -rf $R/p?/; cp -r $R $OUT/
