# call F18 (issue 12; one H200; carry .gpu/whl1 .gpu/old; ~6 min): this tree (device copies cut, grouped launches)
# against 7faafa2 (.gpu/old) in alternating processes of the scale bench's forward / detect pairs; then each
# function's host time (host_sections.py) and the timeline at this tree.
source scripts/h200_session5/env.sh
R=/tmp/resF18; mkdir -p $R
for c in new1 old1 new2 old2 new3 old3 new4; do
  S=scripts/bench_scale.py; [ "${c#old}" != "$c" ] && S=.gpu/old/scripts/bench_scale.py
  (timeout 70 python3 $S --config 8b --batch-size 8 --reps 15 --steps forward,detect --out $R/$c) > $R/$c.log 2>&1
  echo "$c rc $?"; grep -E "^\| detect" $R/$c.log | cut -c1-110
done
timeout 120 python3 scripts/h200_session18/check_forms.py > $R/forms.log 2>&1; echo "forms rc $?"; tail -2 $R/forms.log
timeout 100 python3 scripts/h200_session18/host_sections.py --reps 5 --top 30 > $R/host.log 2>&1; echo "host rc $?"
sed -n '1,16p' $R/host.log
timeout 80 python3 scripts/h200_session11/detect_timeline.py --reps 5 > $R/timeline.log 2>&1; echo "timeline rc $?"
grep -E "run start #1|run end|weights queued|flush|^\| end|wall median" $R/timeline.log
rm -rf $R/new?/ $R/old?/; cp -r $R $OUT/
