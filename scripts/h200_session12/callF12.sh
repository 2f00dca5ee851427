# call F12 (issue 11; one H200; carry .gpu/whl1; < 4 min): the tensor-core int4 GEMV (branch int4tc) against tinygemm
# at the five 8B decode shapes, M=1, bf16, group 128, every config under CUDA graphs and checked against the float
# reference; writes $OUT/tc/gemv_configs.json in TUNED form. Run twice: F12 with the first 25 configs of the tc grid,
# F12b (BUDGET=200 DECODE=1) with the 48 added after it, then decode with its table.
source scripts/h200_session5/env.sh
R=/tmp/resF12; mkdir -p $R
timeout 230 python3 scripts/sweep_gemv.py --kinds int4 --int4-kernels tc --no-today --time-budget ${BUDGET:-170} --out $R/tc \
  > $R/tc.log 2>&1; echo "tc rc $?"
grep -viE "warn" $R/tc.log | tail -40 | cut -c1-260
# F12b also: 8B decode with the sweep's table (tc where it beat tinygemm, tinygemm elsewhere)
if [ -n "$DECODE" ] && [ -f $R/tc/gemv_configs.json ]; then
  SYSQ_GEMV_CONFIGS=$R/tc/gemv_configs.json timeout 240 python3 scripts/bench_generate.py --device cuda \
    --model config:llama3-8b --phases decode1 --modes compiled --lm-head --rows fp,w4a16+fused --kernel-table \
    --time-budget 180 --out $R/decode > $R/decode.log 2>&1; echo "decode rc $?"
  grep -E "^\| |cudagraph|Error|error" $R/decode.log | head -10 | cut -c1-300
  grep -E "^ +[0-9.]+ +[0-9.]+% .*(tinygemm|_int4|_decode_kernel)" $R/decode.log | head -6
fi
cp -r $R $OUT/
