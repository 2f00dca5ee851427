# call I10 (issue 12; one H200, carry .gpu/whl1 .gpu/t_4nocycle.tar .gpu/t_6float.tar; ~4 min): the float32 host
# copies against the tree before them (one round, 9 reps each), then the scale bench's detect row twice.
source scripts/h200_session5/env.sh
R=/tmp/resI10; mkdir -p $R; rm -f .gpu/t_1before.tar .gpu/t_2after.tar .gpu/t_3batch.tar .gpu/t_5freeze.tar
ROUNDS=1 WHERE_ARGS="--kernels split --reps 9" source scripts/h200_session9/ab.sh
for f in $R/t_*.txt; do echo "== $(basename $f)"; grep -E "^\| (forward|detect)" $f | cut -c1-250; done
for i in 1 2; do
  timeout 120 python3 scripts/bench_scale.py --config 8b --batch-size 8 --reps 11 --steps forward,detect \
    --out $R/detect-b8-$i > $R/detect-b8-$i.log 2>&1; echo "scale $i rc $?"
  grep -E "^\| (forward|detect)" $R/detect-b8-$i.log | cut -c1-330
done
cp -r $R/* $OUT/
