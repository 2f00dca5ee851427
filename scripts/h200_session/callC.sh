# call C: both GPUs: 8B split over two GPUs (scale); the peers (auto-round on GPU1) and the tables resumed
source scripts/h200_session/env.sh
R=/tmp/res; mkdir -p $R; export SYSQ_PEER_VENVS=/tmp/venvs
( timeout 230 python3 scripts/bench_scale.py --config 8b --gpus 2 --steps split-detect,split-mitigate,split-static,split-ppl --out $R/scale8b-2gpu > $R/scale8b-2gpu.log 2>&1
  timeout 190 python3 scripts/bench_scale.py --config 8b --layers 8 --gpus 2 --steps split-gptq --out $R/scale8b-2gpu-gptq > $R/scale8b-2gpu-gptq.log 2>&1 ) &
( export CUDA_VISIBLE_DEVICES=1
  timeout 440 python3 scripts/int4_table.py --device cuda --quiet --configs fp,autoround-w4a16-g64,autoround-w4a16-g128,w4a16-g64,w4a16-g64+fz,w4a16-g64+fz+learned,w4a16-g64@auto,w4a16-g64+fz@auto+learned,w4a16-g128,w4a16-g128+fz@auto+learned,w4a8@auto,w4a8+fz@auto+learned,w4a4+kv4@auto --out $R/int4 > $R/int4c.log 2>&1 ) &
( export CUDA_VISIBLE_DEVICES=0; sleep 1
  timeout 440 python3 scripts/mitigation_table.py --device cuda --rows w8a8-static,w8a8,w4a16,w4a8,w4a4+kv4 --cols none,smoothquant,auto-fast,auto --extra fp --sensitivity '' --out $R/mit > $R/mitc.log 2>&1
  ) &
wait
tar czf $OUT/callC.tgz -C /tmp res
for f in $R/*c.log $R/scale8b-2gpu*.log; do echo "=== $f"; tail -c 1500 $f; done
