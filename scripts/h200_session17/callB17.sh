# call B17 (issue 12; one H200, fresh machine; carry .gpu/whl1; ~3 min): after c037281 (the INT8 order on the
# device): the host sections, the timeline, and the scale bench's forward / detect pairs in three processes.
source scripts/h200_session5/env.sh
R=/tmp/resB17; mkdir -p $R
timeout 150 python3 scripts/h200_session17/tail_sections.py --reps 7 > $R/sections.log 2>&1; echo "sections rc $?"
head -28 $R/sections.log
timeout 90 python3 scripts/h200_session11/detect_timeline.py --reps 5 > $R/timeline.log 2>&1; echo "timeline rc $?"
tail -8 $R/timeline.log
for c in p1 p2 p3; do
  (timeout 80 python3 scripts/bench_scale.py --config 8b --batch-size 8 --reps 15 --steps forward,detect \
    --out $R/$c) > $R/$c.log 2>&1; echo "$c rc $?"
  grep -E "^\| (forward|detect)" $R/$c.log | cut -c1-300
done
cp -r $R $OUT/
