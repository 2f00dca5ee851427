# call C9 (issue 12; one H200, carry .gpu/whl1 and .gpu/t_<commit>.tar = `git archive <commit> sysq`; ~5 min): detect at
# 8B with the split kernel, each commit's sysq in turn (two rounds, one process each), then this tree's profile.
source scripts/h200_session5/env.sh
R=/tmp/resC9; mkdir -p $R
for i in 1 2; do
  for t in .gpu/t_*.tar; do
    c=$(basename $t .tar); mkdir -p /tmp/$c && tar -x -C /tmp/$c -f $t && cp -r scripts /tmp/$c/
    (cd /tmp/$c && PYTHONPATH=/tmp/$c:/tmp/site timeout 100 python3 scripts/h200_session9/detect_where.py --quick \
      --kernels split) > $R/$c-$i.txt 2>&1; echo "$c round $i rc $?"
  done
done
timeout 150 python3 scripts/h200_session9/detect_where.py --reps 3 --kernels fused,split --variants > $R/profile.txt 2>&1
echo "profile rc $?"
cp -r $R/* $OUT/
for f in $R/t_*.txt; do echo "== $(basename $f)"; grep -E "^\| (forward|detect)" $f; done
grep -E "^\| |profiled|cProfiled" $R/profile.txt
