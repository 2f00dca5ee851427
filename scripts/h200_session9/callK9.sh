# call K9 (issue 15; one H200 with the default model and data carried as in docs/INT4.md "Every peer in one H200 call"; 5-8 min):
# how path-noisy is w4a16@auto's learned step (100 x 1 SignSGD steps, lr 1/100) on the GPU, and does lr 0.005 or
# 50 x 2 steps move the mean? On the 2-core CPU (windows 0-39 / 40-79, x FP): lr 0.01 seed 0 1.0677 / 1.0677,
# seed 1 1.0622 / 1.0465; lr 0.005 seeds 0-2 1.0589 / 1.0526, 1.0624 / 1.0585, 1.0625 / 1.0627; 50 x 2 at lr 0.01
# seed 0 1.0627 / 1.0643 (ninth session, docs/INT4.md).
# Ten processes side by side, one configuration each, each with its own cache (the FP
# perplexity and detect take seconds on the GPU); SmolLM2 fp32, 32 calibration windows.
source scripts/h200_session5/env.sh
R=/tmp/resK9; mkdir -p $R
export OMP_NUM_THREADS=1 NW=40 CN=32 OFF=0,40 DEVICE=cuda
C=()
for s in 0 1 2 3; do C+=("w4a16@auto,learn_seed=$s" "w4a16@auto,learn_lr=0.005,learn_seed=$s"); done
for s in 0 1; do C+=("w4a16@auto,learn_steps=50,learn_batch_size=2,learn_lr=0.01,learn_seed=$s"); done
i=0
for c in "${C[@]}"; do
  i=$((i + 1))
  ( PROBE_CACHE=$R/cache$i timeout 480 python3 scripts/int4_probe.py "$c" > $R/k9-$i.log 2>&1 || echo "$c rc $?" ) &
done
wait
cp $R/*.log $OUT/
grep -h PROBE $R/*.log | sort
