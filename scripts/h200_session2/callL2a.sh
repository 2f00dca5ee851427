# call L2a (nvidia-h200-x2): detect against a plain forward on the 8B shape (bf16), batch 8 with the profile's
# phase table, then batch 4 (GPU0 only: detect's host work would disturb a timing on the other GPU).
source scripts/h200_session/env.sh
R=/tmp/res; mkdir -p $R
export CUDA_VISIBLE_DEVICES=0
timeout 110 python3 scripts/bench_scale.py --config 8b --batch-size 8 --steps forward,detect,profile --out $R/detect-b8 > $R/detect-b8.log 2>&1
timeout 70 python3 scripts/bench_scale.py --config 8b --batch-size 4 --steps forward,detect --out $R/detect-b4 > $R/detect-b4.log 2>&1
tar czf $OUT/callL2a.tgz -C /tmp res
for f in $R/*.log; do echo "=== $f"; tail -c 1500 $f; done
