# call D9 (issue 12; one H200, carry .gpu/whl1, .gpu/t_1before.tar (698e8d0's sysq), .gpu/t_2after.tar (this tree's);
# ~4 min): detect at 8B before / after this session's changes, alternating processes, 9 reps each (median, min,
# the report-building tail, full GC pauses), both kernel designs timed in turn.
source scripts/h200_session5/env.sh
R=/tmp/resD9; mkdir -p $R
for i in 1 2; do
  for t in .gpu/t_*.tar; do
    c=$(basename $t .tar); mkdir -p /tmp/$c && tar -x -C /tmp/$c -f $t && cp -r scripts /tmp/$c/
    (cd /tmp/$c && PYTHONPATH=/tmp/$c:/tmp/site timeout 120 python3 scripts/h200_session9/detect_where.py --quick \
      --reps 9 --kernels fused,split) > $R/$c-$i.txt 2>&1; echo "$c round $i rc $?"
  done
done
cp -r $R/* $OUT/
for f in $R/t_*.txt; do echo "== $(basename $f)"; grep -E "^\| (forward|detect)" $f | cut -c1-250; done
