# call L1 (nvidia-h200-x2): timing on random-weight 8B shapes, one timing job per GPU.
# GPU0: the decode GEMV kernels (bench_gemv), then decode batch 1 (fp, w4a16, w8a16), then the same with lm_head quantized.
# GPU1: disk offload on an 8-layer 8B slice (host peak with and without), then the 70B 3-layer slice in bf16.
source scripts/h200_session/env.sh
R=/tmp/res; mkdir -p $R
( export CUDA_VISIBLE_DEVICES=0
  timeout 130 python3 scripts/bench_gemv.py --time-budget 80 --out $R/gemv > $R/gemv.log 2>&1
  timeout 220 python3 scripts/bench_generate.py --device cuda --model config:llama3-8b --phases decode1 --rows fp,w4a16,w8a16 --modes compiled --top 12 --time-budget 170 --out $R/decode > $R/decode.log 2>&1
  timeout 170 python3 scripts/bench_generate.py --device cuda --model config:llama3-8b --phases decode1 --rows fp,w4a16,w8a16 --modes compiled --lm-head --time-budget 110 --out $R/decode-lmhead > $R/decode-lmhead.log 2>&1 ) &
( export CUDA_VISIBLE_DEVICES=1
  timeout 260 python3 scripts/bench_offload.py --config 8b --layers 8 --device cuda --steps detect,static,save --out $R/offload > $R/offload.log 2>&1
  timeout 230 python3 scripts/bench_scale.py --config 70b --layers 3 --steps seq-detect,mitigate,static,gptq --out $R/scale70b > $R/scale70b.log 2>&1 ) &
wait
tar czf $OUT/callL1.tgz -C /tmp res
for f in $R/*.log; do echo "=== $f"; tail -c 1800 $f; done
