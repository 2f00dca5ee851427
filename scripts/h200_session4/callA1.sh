# call A1 (nvidia-h200, fresh machine; carries .gpu/whl1): issue 11's decode goals after the fused projections
# (fuse11): Llama-3-8B shape, bf16, decode batch 1, static cache, compiled with CUDA graphs, lm_head quantized too;
# fp / fp+fused / w8a16 / w8a16+fused / w4a16 / w4a16+fused side by side in one process, with the kernel table
# (every kernel of the compiled step, per class) behind each row. Alone on the GPU.
source scripts/h200_session/env.sh
R=/tmp/res; mkdir -p $R
timeout 500 python3 scripts/bench_generate.py --device cuda --model config:llama3-8b --phases decode1 --modes compiled \
  --lm-head --rows fp,fp+fused,w8a16+fused,w4a16+fused,w8a16,w4a16 --kernel-table --time-budget 400 --out $R/decode-fused > $R/decode-fused.log 2>&1
timeout 60 python3 scripts/bench_gemv.py --out $R/gemv > $R/gemv.log 2>&1
tar czf $OUT/callA1.tgz -C /tmp res
for f in $R/*.log; do echo "=== $f"; grep -v "^\s*$" $f | tail -c 5000; done
