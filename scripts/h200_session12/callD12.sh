# call D12 (issue 11; one H200; carry .gpu/whl1; ~8 min): decode attention with the slices merged in the same launch
# (branch comb12): the kernel sweep's shipped rows (correctness against float attention, us per call), then decode of
# the 8B shape, batch 1, compiled, in two processes (the second without the w4a16 row).
source scripts/h200_session5/env.sh
R=/tmp/resD12; mkdir -p $R
timeout 110 python3 scripts/bench_decode_kernels.py --device cuda --parts attention --quick --time-budget 80 \
  --out $R/dec > $R/dec.log 2>&1; echo "dec rc $?"
grep -iE "shipped|error|Traceback" $R/dec.log | head -12 | cut -c1-250
for g in g1 g2; do
  rows=fp,w8a16+fused,w4a16+fused; [ $g = g2 ] && rows=fp,w8a16+fused
  timeout 230 python3 scripts/bench_generate.py --device cuda --model config:llama3-8b --phases decode1 --modes compiled \
    --lm-head --rows $rows --kernel-table --time-budget 180 --out $R/$g > $R/$g.log 2>&1; echo "$g rc $?"
  grep -E "^\| |cudagraph|Error|error" $R/$g.log | head -14 | cut -c1-300
  grep -E "^ +[0-9.]+ +[0-9.]+% .*(_int8_kernel|_decode_kernel|_combine_kernel|tinygemm)" $R/$g.log | head -8
done
cp -r $R $OUT/
