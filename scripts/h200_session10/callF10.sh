# call F10 / G10 (issue 12; one H200, carry .gpu/whl1; ~5 min): the scale bench's forward and detect rows on this tree,
# three processes in turn, 11 reps each (a full collection and the previous report freed before each timed rep).
source scripts/h200_session5/env.sh
R=/tmp/resF10; mkdir -p $R
for i in 1 2 3; do
  timeout 150 python3 scripts/bench_scale.py --config 8b --batch-size 8 --reps 11 --steps forward,detect \
    --out $R/detect-b8-$i > $R/detect-b8-$i.log 2>&1; echo "scale $i rc $?"
  grep -E "^\| (forward|detect)" $R/detect-b8-$i.log | cut -c1-330
done
cp -r $R/* $OUT/
