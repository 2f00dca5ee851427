# call E (nvidia-h200-x2, 2026-11-30 second session): random-weight 8B shape only (no default model needed).
# GPU0: scale in bf16 (forward, detect x forward, profile, sequential detect; GPTQ w4a16 on an 8-layer slice),
#       then the decode diagnosis (does reduce-overhead record CUDA graphs?).
# GPU1: prefill, inductor's default mode, then max-autotune-no-cudagraphs (inductor's Triton int8 GEMM templates).
source scripts/h200_session/env.sh
R=/tmp/res; mkdir -p $R
( export CUDA_VISIBLE_DEVICES=0
  timeout 170 python3 scripts/bench_scale.py --config 8b --steps forward,detect,profile,seq-detect --out $R/scale8b > $R/scale8b.log 2>&1
  timeout 120 python3 scripts/bench_scale.py --config 8b --layers 8 --steps gptq --out $R/scale8b-gptq > $R/scale8b-gptq.log 2>&1
  TORCH_LOGS=perf_hints timeout 150 python3 scripts/bench_generate.py --device cuda --model config:llama3-8b --phases decode1 --rows fp,w4a16 --modes compiled --time-budget 100 --out $R/decode-diag > $R/decode-diag.log 2>&1 ) &
( export CUDA_VISIBLE_DEVICES=1
  timeout 200 python3 scripts/bench_generate.py --device cuda --model config:llama3-8b --phases prefill --rows fp,w8a8-fp8-static,w8a8-fp8,w8a8,w8a8-static --modes compiled --time-budget 150 --out $R/prefill > $R/prefill.log 2>&1
  timeout 250 python3 scripts/bench_generate.py --device cuda --model config:llama3-8b --phases prefill --rows fp,w8a8,w8a8-fp8-static --modes compiled --prefill-mode max-autotune-no-cudagraphs --time-budget 170 --out $R/prefill-at > $R/prefill-at.log 2>&1 ) &
wait
tar czf $OUT/callE.tgz -C /tmp res
for f in $R/*.log; do echo "=== $f"; tail -c 1500 $f; done
grep -h -i "cudagraph" $R/decode-diag.log | sort | uniq -c | head -20
