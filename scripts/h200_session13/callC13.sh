# call C13 (issue 12; one H200, fresh machine; carry .gpu/whl1 .gpu/t_base.tar = `git archive b4665d2 sysq scripts`,
# the tree before branch det13; < 4 min): the scale bench's forward / detect pairs with det13's host work cut, in two
# processes of this tree around one of the base tree, then detect's host-only work on both trees on this host's CPU.
source scripts/h200_session5/env.sh
R=/tmp/resC13; mkdir -p $R
b=/tmp/base13; mkdir -p $b && tar -x -C $b -f .gpu/t_base.tar
for c in this1 base this2; do
  dir=$PWD; [ $c = base ] && dir=$b
  (cd $dir && PYTHONPATH=$dir:/tmp/site timeout 70 python3 scripts/bench_scale.py --config 8b --batch-size 8 \
    --reps 15 --steps forward,detect --out $R/$c) > $R/$c.log 2>&1; echo "$c rc $?"
  grep -E "^\| (forward|detect)" $R/$c.log | cut -c1-330
done
timeout 40 python3 scripts/bench_detect_host.py --reps 10 > $R/host.log 2>&1
timeout 40 python3 scripts/bench_detect_host.py --reps 10 --tree $b >> $R/host.log 2>&1; tail -12 $R/host.log
cp -r $R $OUT/
