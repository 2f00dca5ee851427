# call A (nvidia-h200-x2): setup; GPU0 scale 8B (detect vs forward, profile, GPTQ slice) then the 8B prefill bench;
# GPU1 the 70B slice then the 8B decode bench. Timing jobs only, one per GPU.
source scripts/h200_session/env.sh
R=/tmp/res; mkdir -p $R
( export CUDA_VISIBLE_DEVICES=0
  timeout 200 python3 scripts/bench_scale.py --config 8b --steps forward,detect,profile,seq-detect --out $R/scale8b > $R/scale8b.log 2>&1
  timeout 130 python3 scripts/bench_scale.py --config 8b --layers 8 --steps gptq --out $R/scale8b-gptq > $R/scale8b-gptq.log 2>&1
  timeout 220 python3 scripts/bench_generate.py --device cuda --model config:llama3-8b --phases prefill --rows fp,w8a8-fp8-static,w8a8-fp8,w8a8 --modes compiled,eager --time-budget 170 --out $R/bench-8b-prefill > $R/bench-8b-prefill.log 2>&1 ) &
( export CUDA_VISIBLE_DEVICES=1
  timeout 200 python3 scripts/bench_scale.py --config 70b --layers 3 --steps seq-detect,mitigate,static,gptq --out $R/scale70b > $R/scale70b.log 2>&1
  timeout 300 python3 scripts/bench_generate.py --device cuda --model config:llama3-8b --phases decode1 --rows fp,w4a16,w8a16 --modes compiled,eager --time-budget 170 --out $R/bench-8b-decode > $R/bench-8b-decode.log 2>&1 ) &
wait
tar czf $OUT/callA.tgz -C /tmp res
for f in $R/*.log; do echo "=== $f"; tail -c 1500 $f; done
