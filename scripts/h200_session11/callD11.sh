# call D11 (issue 11; one H200; carry .gpu/whl1; ~5 min): decode, 8B shape, batch 1, compiled, with sysq's defaults
# after aa4db20 and the H200 entry of gemv.TUNED (no SYSQ_GEMV_CONFIGS); then the same with the gated prologue back
# on (SYSQ_GEMV_GATED=1), fp and w8a16+fused only.
source scripts/h200_session5/env.sh
R=/tmp/resD11; mkdir -p $R
timeout 250 python3 scripts/bench_generate.py --device cuda --model config:llama3-8b --phases decode1 --modes compiled \
  --lm-head --rows fp,w8a16+fused,w4a16+fused --kernel-table --time-budget 190 --out $R/default > $R/default.log 2>&1
echo "default rc=$?"
SYSQ_GEMV_GATED=1 timeout 200 python3 scripts/bench_generate.py --device cuda --model config:llama3-8b \
  --phases decode1 --modes compiled --lm-head --rows fp,w8a16+fused --time-budget 150 --out $R/gated > $R/gated.log 2>&1
echo "gated rc=$?"
cp -r $R $OUT/
for f in default gated; do echo "== $f"; grep -E "^kernel table|GEMV/GEMM: |^\| |^- decode1|Error|error" $R/$f.log | head -20; done
grep -E "^ +[0-9.]+ +[0-9.]+% .*(_int8_kernel|_decode_kernel|tinygemm|silu)" $R/default.log | head -12
