# call G18 (issue 12; one H200; carry .gpu/whl1; ~4 min): the session's last tree, five processes of the scale
# bench's forward / detect pairs (how often detect holds <= 1.5x a forward), then the timeline.
source scripts/h200_session5/env.sh
R=/tmp/resG18; mkdir -p $R
for c in p1 p2 p3 p4 p5; do
  (timeout 60 python3 scripts/bench_scale.py --config 8b --batch-size 8 --reps 15 --steps forward,detect \
    --out $R/$c) > $R/$c.log 2>&1; echo "$c rc $?"
  grep -E "^\| detect" $R/$c.log | cut -c1-110
done
timeout 60 python3 scripts/h200_session11/detect_timeline.py --reps 5 > $R/timeline.log 2>&1; echo "timeline rc $?"
grep -E "run start #1|run end|weights queued|flush|^\| end|wall median" $R/timeline.log
rm -rf $R/p?/; cp -r $R $OUT/
