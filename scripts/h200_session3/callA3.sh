# call A3: the GGUF's last piece completes the default model. Accuracy jobs only.
# GPU0 / GPU1: the rest of the INT4 table (issue 15), resumed from the second session's rows
# (results/h200/s2/int4: fp, auto-round g64 at its defaults, RTN, +fz, +fz+learned), split over the two GPUs.
# Both: lm-eval at batch size 1, one GPU against data-parallel on two (issue 12's control: no padding, so the
# requests are computed the same way in both).
source scripts/h200_session/env.sh
R=/tmp/res; mkdir -p $R
export OMP_NUM_THREADS=4 SYSQ_PEER_VENVS=/tmp/venvs
mkdir -p /tmp/venvs/autoround/bin && printf '#!/bin/sh\nPYTHONPATH=/tmp/site exec python3 "$@"\n' > /tmp/venvs/autoround/bin/python && chmod +x /tmp/venvs/autoround/bin/python && touch /tmp/venvs/autoround/.complete
python3 -c "import sysq; m, t = sysq.load('smollm2-135m'); print('smollm2 ok', sum(p.numel() for p in m.parameters()))" || exit 1
cp -r results/h200/s2/int4 $R/int4a
A="fp,w4a16-g64+fz+learned200x8,w4a16-g128+fz+learned200x8,w4a16-g64+fz@auto+learned,w4a16-g64@auto,w4a16-g64+fz+learned200x8@auto+learned"
B="fp,w4a8+g64+fz@auto+learned,w4a4+g64+kv4@auto+learned,w4a8@auto,w4a4+kv4@auto,w4a8+fz@auto+learned,w4a4+g64+ag64+kv4@auto+learned,w4a4+kv4@auto+learned"
( export CUDA_VISIBLE_DEVICES=0
  timeout 540 python3 scripts/int4_table.py --device cuda --quiet --configs $A --time-limit 330 --out $R/int4a > $R/int4a.log 2>&1 ) &
( export CUDA_VISIBLE_DEVICES=1
  timeout 540 python3 scripts/int4_table.py --device cuda --quiet --configs $B --time-limit 330 --out $R/int4b > $R/int4b.log 2>&1 ) &
( BS=1 timeout 400 bash scripts/h200_session2/lmeval_dp.sh $R/lmeval-bs1 > $R/lmeval-bs1.log 2>&1 ) &
wait
tar czf $OUT/callA3.tgz --exclude='*.safetensors' --exclude='*.pt' --exclude='models' -C /tmp res
for f in $R/*.log; do echo "=== $f"; tail -c 1800 $f; done
