# call C11 (issue 11; one H200; carry .gpu/whl1; ~4 min): decode, 8B shape, batch 1, compiled, with what call A11's
# sweep found: decode attention 128 keys x 3 stages in one program per KV head, down projection's SiLU as its own
# kernel (no gated prologue), and the sweep's int8 GEMV configs (gemv_configs_a11.json).
source scripts/h200_session5/env.sh
R=/tmp/resC11; mkdir -p $R
SYSQ_GEMV_CONFIGS=scripts/h200_session11/gemv_configs_a11.json timeout 280 python3 scripts/bench_generate.py \
  --device cuda --model config:llama3-8b --phases decode1 --modes compiled --lm-head \
  --rows fp,w8a16+fused,w4a16+fused --kernel-table --time-budget 200 --out $R/decode > $R/decode.log 2>&1
echo "decode rc=$?"
cp -r $R $OUT/
grep -E "^decode tok/s|^kernel table|GEMV/GEMM: |^\| |Decode tok/s|^- decode1|Error|error" $R/decode.log | head -40
grep -E "^ +[0-9.]+ +[0-9.]+% " $R/decode.log | head -60
