# call E11 (issue 11; one H200; carry .gpu/whl1; ~3 min): decode, 8B shape, batch 1, compiled, sysq's defaults with the
# decode attention split over 64-key slices for caches over 128 keys and the slices combined by one Triton kernel
# (the bench's cache, ~142 keys: 3 slices per KV head, 24 programs instead of 8).
source scripts/h200_session5/env.sh
R=/tmp/resE11; mkdir -p $R
timeout 250 python3 scripts/bench_generate.py --device cuda --model config:llama3-8b --phases decode1 --modes compiled \
  --lm-head --rows fp,w8a16+fused,w4a16+fused --kernel-table --time-budget 190 --out $R/split > $R/split.log 2>&1
echo "split rc=$?"
cp -r $R $OUT/
grep -E "^kernel table|GEMV/GEMM: |^\| |^- decode1|Error|error" $R/split.log | head -20
grep -E "^ +[0-9.]+ +[0-9.]+% .*(_int8_kernel|_decode_kernel|_combine_kernel|tinygemm|attention)" $R/split.log | head -16
