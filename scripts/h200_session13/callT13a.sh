# call T13a (issue 11, and a transfer for issue 15; one H200, fresh machine; carry .gpu/a .gpu/whl1): the CUDA int4
# GEMV (csrc/int4_mma.cu) built on the device, its tests, the 8B decode shapes against tinygemm and bf16 (M = 1,
# group 128, CUDA graphs, L2 busted), then 8B decode at batch 1, compiled, with the int4 modules on it.
source scripts/h200_session13/env.sh
R=/tmp/resT13a; mkdir -p $R
export TORCH_EXTENSIONS_DIR=/tmp/torch_ext
timeout 240 python3 -m pytest -q tests/test_quant_int4_mma.py > $R/test.log 2>&1; rc=$?; echo "test rc $rc"
tail -25 $R/test.log | cut -c1-300
timeout 150 python3 scripts/bench_gemv.py --only "bf16,tinygemm,mma" --no-inductor --out $R/gemv > $R/gemv.log 2>&1
echo "gemv rc $?"; grep -E "^ *[0-9]+ ->|rror" $R/gemv.log | cut -c1-200
if [ $rc = 0 ]; then
  SYSQ_INT4_GEMV=mma timeout 240 python3 scripts/bench_generate.py --device cuda --model config:llama3-8b \
    --phases decode1 --modes compiled --lm-head --rows fp,w4a16+fused --kernel-table --time-budget 180 \
    --out $R/decode > $R/decode.log 2>&1; echo "decode rc $?"
  grep -E "^\| |cudagraph|Error|error" $R/decode.log | head -10 | cut -c1-300
  grep -E "^ +[0-9.]+ +[0-9.]+% .*(tinygemm|_int4|int4_mma|_decode_kernel)" $R/decode.log | head -6
fi
cp -r $R $OUT/
