# call G7 (issue 11, decode on one H200; needs .gpu/whl1 carried, as A5/B5): the int4 fma GEMV against tinygemm and
# the nibble kernel, the launch-config sweep that writes the per-shape table (int4 entries name their kernel, or
# "tinygemm"), then the decode rows with that table and the back-to-back decode timing (evaluation/bench.py).
#   bash scripts/h200_session7/callG7.sh gemv     # ~3.5 min: bench_gemv (TB/s per kernel) + sweep_gemv
#   bash scripts/h200_session7/callG7.sh decode   # ~4 min: the four decode rows with the sweep's table
#   bash scripts/h200_session7/callG7.sh          # both (~7.5 min; one call if the 10-minute limit allows)
# Outputs: $OUT/callG7-<part>.tgz (the logs, JSON and tables under res7/) and a digest on stdout.
source scripts/h200_session5/env.sh
R=/tmp/res7; mkdir -p $R
PART=${1:-all}
if [ "$PART" = gemv ] || [ "$PART" = all ]; then
  timeout 90 python3 scripts/bench_gemv.py --no-inductor --out $R/gemv > $R/gemv.log 2>&1; echo "bench_gemv rc=$?"
  timeout 150 python3 scripts/sweep_gemv.py --time-budget 100 --out $R/sweep > $R/sweep.log 2>&1; echo "sweep rc=$?"
  tar czf $OUT/callG7-gemv.tgz -C /tmp res7/gemv res7/gemv.log res7/sweep res7/sweep.log
  echo "=== bench_gemv (GB/s)"; grep -E "^ *[0-9]+ -> " $R/gemv.log | awk '{print}' | head -60
  echo "=== sweep"; grep -E "^ *[0-9]+ -> |skipped|TUNED" $R/sweep.log | head -20
fi
if [ "$PART" = decode ] || [ "$PART" = all ]; then
  T=$R/sweep/gemv_configs.json
  [ -f $T ] || { echo "no $T: run the gemv part first (same machine)"; exit 2; }
  SYSQ_GEMV_CONFIGS=$T timeout 235 python3 scripts/bench_generate.py --device cuda --model config:llama3-8b \
    --phases decode1 --modes compiled --lm-head --rows fp,fp+fused,w8a16+fused,w4a16+fused --kernel-table \
    --time-budget 185 --out $R/decode > $R/decode.log 2>&1; echo "decode rc=$?"
  tar czf $OUT/callG7-decode.tgz -C /tmp res7/decode res7/decode.log res7/sweep/gemv_configs.json
  echo "=== decode"; grep -E "^decode tok/s|^kernel table|GEMV/GEMM: |^\| |Decode tok/s|^- decode1|modules|Error|error" \
    $R/decode.log | head -40
fi
