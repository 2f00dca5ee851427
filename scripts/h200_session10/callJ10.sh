# call J10 (issue 12; one H200, carry .gpu/whl1 .gpu/t_6float.tar .gpu/t_7threads.tar (+ one host thread); ~3.5
# min): the scale bench's forward and detect rows, the two trees' processes alternating, two rounds.
source scripts/h200_session5/env.sh
R=/tmp/resJ10; mkdir -p $R; rm -f .gpu/t_1before.tar .gpu/t_2after.tar .gpu/t_3batch.tar .gpu/t_4nocycle.tar .gpu/t_5freeze.tar
for i in 1 2; do
  for t in .gpu/t_*.tar; do
    c=$(basename $t .tar); mkdir -p /tmp/$c && tar -x -C /tmp/$c -f $t && cp -r scripts /tmp/$c/
    (cd /tmp/$c && PYTHONPATH=/tmp/$c:/tmp/site timeout 70 python3 scripts/bench_scale.py --config 8b --batch-size 8 \
      --reps 11 --steps forward,detect --out $R/$c-$i) > $R/$c-$i.log 2>&1; echo "$c round $i rc $?"
    grep -E "^\| (forward|detect)" $R/$c-$i.log | cut -c1-330
  done
done
cp -r $R/* $OUT/
