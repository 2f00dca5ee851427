# sourced by the calls C9, D9, F9, G9: detect_where.py --quick on each carried .gpu/t_<name>.tar (`git archive <commit>
# sysq`) in turn, ROUNDS rounds, one process each, results in $R/t_<name>-<round>.txt. Needs R, ROUNDS, WHERE_ARGS.
for i in $(seq 1 $ROUNDS); do
  for t in .gpu/t_*.tar; do
    c=$(basename $t .tar); mkdir -p /tmp/$c && tar -x -C /tmp/$c -f $t && cp -r scripts /tmp/$c/
    (cd /tmp/$c && PYTHONPATH=/tmp/$c:/tmp/site timeout 120 python3 scripts/h200_session9/detect_where.py --quick \
      $WHERE_ARGS) > $R/$c-$i.txt 2>&1; echo "$c round $i rc $?"
  done
done
