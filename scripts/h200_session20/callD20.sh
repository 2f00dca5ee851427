# call D20 (issue 12; right after C20, same machine, or fresh with carry .gpu/whl1; ~4 min): the scale bench's
# forward / detect pairs (8B shape, 16 x 512, batch 8) in three processes, at this session's HEAD.
source scripts/h200_session20/env.sh
R=/tmp/resD20; mkdir -p $R
for c in p1 p2 p3; do
  (timeout 80 python3 scripts/bench_scale.py --config 8b --batch-size 8 --reps 15 --steps forward,detect \
    --out $R/$c) > $R/$c.log 2>&1; echo "$c rc $?"
  grep -E "^\| (forward|detect)" $R/$c.log | cut -c1-420
done
tar czf $OUT/resD20.tgz -C /tmp resD20
