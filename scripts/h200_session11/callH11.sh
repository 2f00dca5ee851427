# call H11 (issue 12; one H200; carry .gpu/whl1 .gpu/t_1before.tar .gpu/t_2after.tar = `git archive <commit> sysq`
# of b4a8186 (session start) and the final tree (one launch per weight group); ~3 min): the scale bench's forward and
# detect rows of both trees (after, before), then the detect timeline of the new tree.
source scripts/h200_session5/env.sh
R=/tmp/resH11; mkdir -p $R
for c in 2after 1before; do
  n=$c-$(date +%s); mkdir -p /tmp/$n && tar -x -C /tmp/$n -f .gpu/t_$c.tar && cp -r scripts /tmp/$n/
  (cd /tmp/$n && PYTHONPATH=/tmp/$n:/tmp/site timeout 80 python3 scripts/bench_scale.py --config 8b --batch-size 8 \
    --reps 11 --steps forward,detect --out $R/$n) > $R/$n.log 2>&1; echo "$c rc $?"
  grep -E "^\| (forward|detect)" $R/$n.log | cut -c1-330
done
timeout 70 python3 scripts/h200_session11/detect_timeline.py --reps 3 > $R/timeline.log 2>&1; echo "timeline rc $?"
grep -vi warn $R/timeline.log | tail -45
cp -r $R $OUT/
