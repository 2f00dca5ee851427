# call F11 (issue 12; one H200; carry .gpu/whl1 .gpu/t_1before.tar .gpu/t_2after.tar = `git archive <commit> sysq`
# of b4a8186 (session start) and 04eb7eb (the host records and report cuts); ~5 min): the scale bench's forward and
# detect rows of both trees (after, before, after), then the detect timeline of the new tree.
source scripts/h200_session5/env.sh
R=/tmp/resF11; mkdir -p $R
for c in 2after 1before 2after; do
  n=$c-$(date +%s); mkdir -p /tmp/$n && tar -x -C /tmp/$n -f .gpu/t_$c.tar && cp -r scripts /tmp/$n/
  (cd /tmp/$n && PYTHONPATH=/tmp/$n:/tmp/site timeout 80 python3 scripts/bench_scale.py --config 8b --batch-size 8 \
    --reps 11 --steps forward,detect --out $R/$n) > $R/$n.log 2>&1; echo "$c rc $?"
  grep -E "^\| (forward|detect)" $R/$n.log | cut -c1-330
done
timeout 100 python3 scripts/h200_session11/detect_timeline.py --reps 5 > $R/timeline.log 2>&1; echo "timeline rc $?"
grep -vi warn $R/timeline.log | tail -45
cp -r $R $OUT/
