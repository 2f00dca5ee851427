# call E10 (issue 12; one H200, carry .gpu/whl1 .gpu/t_4nocycle.tar .gpu/t_5freeze.tar (+ gc.freeze in detect);
# ~6 min): the two trees' detect in turn (2 rounds, 9 reps, no collection between reps), then the scale bench's
# forward, detect and profile rows on this tree.
source scripts/h200_session5/env.sh
R=/tmp/resE10; mkdir -p $R; rm -f .gpu/t_1before.tar .gpu/t_2after.tar .gpu/t_3batch.tar
ROUNDS=2 WHERE_ARGS="--kernels split --reps 9" source scripts/h200_session9/ab.sh
for f in $R/t_*.txt; do echo "== $(basename $f)"; grep -E "^\| (forward|detect)" $f | cut -c1-250; done
timeout 150 python3 scripts/bench_scale.py --config 8b --batch-size 8 --reps 11 --steps forward,detect,profile \
  --out $R/detect-b8 > $R/detect-b8.log 2>&1; echo "scale rc $?"
cp -r $R/* $OUT/
grep -E "^config|^\| (forward|detect|profile)" $R/detect-b8.log | cut -c1-400
