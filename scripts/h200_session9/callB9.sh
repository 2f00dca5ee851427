# call B9 (issue 12; one H200, carry .gpu/whl1 and .gpu/old.tar = `git archive <before> sysq`; ~4 min): detect at 8B,
# before (the tar's sysq) against this tree, alternating processes, each timing the fused and split kernels in
# turn; then this tree's profile (device busy time, cProfile with the callers of the host waits).
source scripts/h200_session5/env.sh
R=/tmp/resB9; mkdir -p $R /tmp/old
tar -x -C /tmp/old -f .gpu/old.tar && cp -r scripts /tmp/old/
for i in 1 2; do
  (cd /tmp/old && PYTHONPATH=/tmp/old:/tmp/site timeout 100 python3 scripts/h200_session9/detect_where.py --quick) \
    > $R/before$i.txt 2>&1; echo "before rc $?"
  timeout 100 python3 scripts/h200_session9/detect_where.py --quick > $R/after$i.txt 2>&1; echo "after rc $?"
done
timeout 150 python3 scripts/h200_session9/detect_where.py --reps 3 --kernels split > $R/profile.txt 2>&1; echo "profile rc $?"
cp -r $R/* $OUT/
for f in before1 after1 before2 after2; do echo "== $f"; grep -E "^\| " $R/$f.txt; done
grep -E "^\| |profiled|cProfiled" $R/profile.txt
