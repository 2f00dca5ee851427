# call B1 (nvidia-h200, fresh machine; carries .gpu/whl1 and the GGUF's first piece): detect against a plain
# forward on the Llama-3-8B shape (bf16, 16 x 512) after the device-side statistics of issue 12: batch 8 with the
# profile's phase table, then batch 4. Timing jobs alone on the GPU.
source scripts/h200_session/env.sh
R=/tmp/res; mkdir -p $R
timeout 150 python3 scripts/bench_scale.py --config 8b --batch-size 8 --steps forward,detect,profile --out $R/detect-b8 > $R/detect-b8.log 2>&1
timeout 90 python3 scripts/bench_scale.py --config 8b --batch-size 4 --steps forward,detect --out $R/detect-b4 > $R/detect-b4.log 2>&1
tar czf $OUT/callB1.tgz -C /tmp res
for f in $R/*.log; do echo "=== $f"; tail -c 2500 $f; done
