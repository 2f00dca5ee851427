# call A18 (issue 12; one H200, fresh machine; carry .gpu/whl1; ~4 min): detect's device time charged to the sysq
# function that launched each kernel (device_sections.py), the timeline, and two processes of the scale bench's
# forward / detect pairs at the tree of the call (the session's baseline on this machine).
source scripts/h200_session5/env.sh
R=/tmp/resA18; mkdir -p $R
timeout 150 python3 scripts/h200_session18/device_sections.py --top 60 > $R/sections.log 2>&1; echo "sections rc $?"
head -45 $R/sections.log
timeout 80 python3 scripts/h200_session11/detect_timeline.py --reps 5 > $R/timeline.log 2>&1; echo "timeline rc $?"
tail -3 $R/timeline.log
for c in p1 p2; do
  (timeout 70 python3 scripts/bench_scale.py --config 8b --batch-size 8 --reps 15 --steps forward,detect \
    --out $R/$c) > $R/$c.log 2>&1; echo "$c rc $?"
  grep -E "^\| detect" $R/$c.log | cut -c1-200
done
rm -rf $R/p?/; cp -r $R $OUT/
