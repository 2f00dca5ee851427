# call A12 (issue 12; one H200; carry .gpu/whl1 .gpu/t_start.tar = `git archive 687d26a sysq`, the session's start;
# ~5 min): the scale bench's forward and detect rows, alternating run by run, in three processes: this tree, the
# start tree (same bench script), this tree again; then detect with the garbage collector paused / running on the GPU.
source scripts/h200_session5/env.sh
R=/tmp/resA12; mkdir -p $R
n=start-$(date +%s); mkdir -p /tmp/$n && tar -x -C /tmp/$n -f .gpu/t_start.tar && cp -r scripts /tmp/$n/
for c in this1 start this2; do
  dir=$PWD; [ $c = start ] && dir=/tmp/$n
  (cd $dir && PYTHONPATH=$dir:/tmp/site timeout 100 python3 scripts/bench_scale.py --config 8b --batch-size 8 \
    --reps 15 --steps forward,detect --out $R/$c) > $R/$c.log 2>&1; echo "$c rc $?"
  grep -E "^\| (forward|detect)" $R/$c.log | cut -c1-420
done
timeout 60 python3 scripts/bench_detect_gc.py --device cuda --reps 12 > $R/gc.log 2>&1; echo "gc rc $?"
grep -vi warn $R/gc.log | tail -5
cp -r $R $OUT/
