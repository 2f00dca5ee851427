# call A13 (issue 11; one H200, fresh machine; carry .gpu/c .gpu/whl1 .gpu/data .gpu/data2, also the first transfer
# of issue 15's table): the CUDA int4 GEMV with its launch configs (csrc/int4_mma.cu CONFIGS): tests, every config at
# the 8B decode shapes against tinygemm and bf16 (M = 1, group 128, CUDA graphs, L2 busted), the fastest per shape
# written as a table (gemv_configs.json), then 8B decode at batch 1, compiled, on that table.
source scripts/h200_session13/env.sh
R=/tmp/resA13; mkdir -p $R
export TORCH_EXTENSIONS_DIR=/tmp/torch_ext
t0=$(date +%s)
timeout 300 python3 -m pytest -q tests/test_quant_int4_mma.py > $R/test.log 2>&1; rc=$?
echo "test rc $rc ($(( $(date +%s) - t0 )) s with the build)"; tail -4 $R/test.log | cut -c1-300
timeout 150 python3 scripts/bench_gemv.py --only "bf16,tinygemm,mma" --mma-sweep --no-inductor --out $R/gemv \
  > $R/gemv.log 2>&1; echo "gemv rc $?"; grep -E "^ *[0-9]+ ->|rror|mma configs" $R/gemv.log | cut -c1-200
if [ $rc = 0 ] && [ -f $R/gemv/gemv_configs.json ]; then
  SYSQ_GEMV_CONFIGS=$R/gemv/gemv_configs.json timeout 250 python3 scripts/bench_generate.py --device cuda \
    --model config:llama3-8b --phases decode1 --modes compiled --lm-head --rows fp,w8a16+fused,w4a16+fused \
    --kernel-table --time-budget 200 --out $R/decode > $R/decode.log 2>&1; echo "decode rc $?"
  grep -E "^\| |cudagraph|Error|error" $R/decode.log | head -10 | cut -c1-300
  grep -E "^ +[0-9.]+ +[0-9.]+% .*(tinygemm|_int4|int4_mma|_int8_kernel|_decode_kernel)" $R/decode.log | head -8 | cut -c1-200
fi
cp -r $R $OUT/
