# call B1 (nvidia-h200, fresh machine; carries .gpu/whl1 and the GGUF's first piece): issue 12's detect against a
# plain forward on the Llama-3-8B shape (bf16, 16 x 512) after the chunked reductions (detect12c): batch 8 with the
# profile's phase table, batch 4, and batch 8 with 1 GiB chunks. Then issue 11's decode rows again with inductor's
# programmatic dependent launch (TORCHINDUCTOR_ENABLE_PDL=1: Hopper overlaps a Triton kernel's launch with the one
# before it), the question being how much of the ~1 ms of gaps between kernels it removes. Timing jobs alone.
source scripts/h200_session/env.sh
R=/tmp/res; mkdir -p $R
timeout 150 python3 scripts/bench_scale.py --config 8b --batch-size 8 --steps forward,detect,profile --out $R/detect-b8 > $R/detect-b8.log 2>&1
timeout 90 python3 scripts/bench_scale.py --config 8b --batch-size 4 --steps forward,detect --out $R/detect-b4 > $R/detect-b4.log 2>&1
timeout 90 python3 scripts/bench_scale.py --config 8b --batch-size 8 --chunk-gib 1 --steps forward,detect --out $R/detect-b8-c1 > $R/detect-b8-c1.log 2>&1
TORCHINDUCTOR_ENABLE_PDL=1 timeout 200 python3 scripts/bench_generate.py --device cuda --model config:llama3-8b --phases decode1 --modes compiled \
  --lm-head --rows fp,w8a16+fused,w4a16+fused --kernel-table --time-budget 150 --out $R/decode-pdl > $R/decode-pdl.log 2>&1
tar czf $OUT/callB1.tgz -C /tmp res
for f in $R/detect*.log; do echo "=== $f"; tail -c 2200 $f; done
echo "=== decode-pdl"; grep -E "^kernel table|GEMV/GEMM: |^\| |Goals|goal" $R/decode-pdl.log | head -30
