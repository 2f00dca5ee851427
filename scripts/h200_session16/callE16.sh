# ran at c822fc6 (the grouped launches and scripts/check_detect_grouped.py; reverted in the commit after it)
# call E16 (issue 12; one H200, fresh machine; carry .gpu/whl1; ~5 min): detect's site reductions in one launch per
# kernel for all same-shaped sites of a chunk. check_detect_grouped.py: the same report as one launch per site and
# both forms' times alternating in one process (tiny, then the 8B shape); then the scale bench's forward / detect
# pairs (8B shape, 16 x 512, batch 8) in three processes.
source scripts/h200_session5/env.sh
R=/tmp/resE16; mkdir -p $R
timeout 120 python3 scripts/check_detect_grouped.py --config tiny --device cuda --reps 3 > $R/check_tiny.log 2>&1; echo "tiny rc $?"
tail -5 $R/check_tiny.log
timeout 200 python3 scripts/check_detect_grouped.py --config 8b --device cuda --reps 11 > $R/check_8b.log 2>&1; echo "8b rc $?"
tail -6 $R/check_8b.log
for c in p1 p2 p3; do
  (timeout 80 python3 scripts/bench_scale.py --config 8b --batch-size 8 --reps 15 --steps forward,detect \
    --out $R/$c) > $R/$c.log 2>&1; echo "$c rc $?"
  grep -E "^\| (forward|detect)" $R/$c.log | cut -c1-420
done
cp -r $R $OUT/
