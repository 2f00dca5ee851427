# call C18 (issue 12; one H200; carry .gpu/whl1 .gpu/old; ~6 min): detect at this tree against 7faafa2 (the
# session's start; `git archive 7faafa2 sysq scripts/bench_scale.py scripts/detect_profile.py` in .gpu/old) on the
# same machine, alternating processes of the scale bench's forward / detect pairs; then device_sections.py and the
# timeline at this tree.
source scripts/h200_session5/env.sh
R=/tmp/resC18; mkdir -p $R
for c in new1 old1 new2 old2 new3 old3; do
  S=scripts/bench_scale.py; [ "${c#old}" != "$c" ] && S=.gpu/old/scripts/bench_scale.py
  (timeout 70 python3 $S --config 8b --batch-size 8 --reps 15 --steps forward,detect --out $R/$c) > $R/$c.log 2>&1
  echo "$c rc $?"; grep -E "^\| detect" $R/$c.log | cut -c1-160
done
timeout 120 python3 scripts/h200_session18/device_sections.py --top 40 > $R/sections.log 2>&1; echo "sections rc $?"
sed -n '1,22p' $R/sections.log
timeout 80 python3 scripts/h200_session11/detect_timeline.py --reps 5 > $R/timeline.log 2>&1; echo "timeline rc $?"
grep -E "run start #1|flush end|^\| end|wall median" $R/timeline.log
rm -rf $R/new?/ $R/old?/; cp -r $R $OUT/
