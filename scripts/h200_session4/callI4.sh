# call I4: the INT4 table of issue 15 (fourth session), every format's best row and auto-round at its defaults, both
# window sets (0-39, 40-79), on one H200 in about 4 minutes: five int4_table processes side by side on the one GPU
# (each its own FP row: the rows are small-kernel bound, so they overlap), then one table with the five merged.
# Needs what call A3 carried: the auto-round wheel(s) under .gpu/whl* (installed to /tmp/site by env.sh) and the data.
source scripts/h200_session/env.sh
R=/tmp/res; mkdir -p $R
export OMP_NUM_THREADS=3 SYSQ_PEER_VENVS=/tmp/venvs
mkdir -p /tmp/venvs/autoround/bin && printf '#!/bin/sh\nPYTHONPATH=/tmp/site exec python3 "$@"\n' > /tmp/venvs/autoround/bin/python && chmod +x /tmp/venvs/autoround/bin/python && touch /tmp/venvs/autoround/.complete
python3 -c "import sysq; m, t = sysq.load('smollm2-135m'); print('smollm2 ok', sum(p.numel() for p in m.parameters()))" || exit 1
T="python3 scripts/int4_table.py --device cuda --quiet --time-limit 200"
for k in peer w4a16-g64 w4a16-g128 w4a8 w4a4; do
  ( timeout 330 $T --configs best-$k --out $R/i4-$k > $R/i4-$k.log 2>&1 ) &
done
wait
# one table: the peer process's rows (reused, nothing recomputed) with the other four merged, each against its own FP
timeout 120 $T --configs best-peer --out $R/i4-peer --merge $R/i4-w4a16-g64 --merge $R/i4-w4a16-g128 --merge $R/i4-w4a8 --merge $R/i4-w4a4 > $R/i4.log 2>&1
tar czf $OUT/callI4.tgz --exclude='*.safetensors' --exclude='*.pt' --exclude='cache' -C /tmp res
for f in $R/i4-*.log; do echo "=== $f"; tail -c 600 $f; done
cat $R/i4-peer/table.md
