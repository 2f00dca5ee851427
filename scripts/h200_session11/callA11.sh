# call A11 (issues 12 and 11; one H200; carry .gpu/whl1 .gpu/t_1before.tar .gpu/t_2after.tar, the trees'
# `git archive <commit> sysq`: b4a8186 (session start) and 40ec131 (records and site reports chunk by chunk); ~7 min):
# the mass kernel on a GPU (the tenth session's last refactor ran only in the interpreter), the scale bench's forward
# and detect rows of both trees (after, before, after), then the decode-kernel sweep (scripts/bench_decode_kernels.py).
source scripts/h200_session5/env.sh
R=/tmp/resA11; mkdir -p $R
timeout 90 python3 scripts/h200_session10/check_mass.py > $R/check_mass.log 2>&1; echo "check_mass rc $?"
tail -12 $R/check_mass.log
for c in 2after 1before 2after; do
  n=$c-$(date +%s); mkdir -p /tmp/$n && tar -x -C /tmp/$n -f .gpu/t_$c.tar && cp -r scripts /tmp/$n/
  (cd /tmp/$n && PYTHONPATH=/tmp/$n:/tmp/site timeout 80 python3 scripts/bench_scale.py --config 8b --batch-size 8 \
    --reps 11 --steps forward,detect --out $R/$n) > $R/$n.log 2>&1; echo "$c rc $?"
  grep -E "^\| (forward|detect)" $R/$n.log | cut -c1-330
done
cp -r $R $OUT/
timeout 230 python3 scripts/bench_decode_kernels.py --time-budget 150 --out $OUT/dec11 > $OUT/dec11.log 2>&1; echo "dec11 rc $?"
grep -vE "^  (attention|gemv): |[Ww]arn" $OUT/dec11.log | tail -120
