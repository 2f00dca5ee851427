# call B5 (after the T2 transfer in the same command, same machine as A5): issue 11's GEMV launch-config sweep over
# the 8B decode shapes (scripts/sweep_gemv.py), then the decode rows again with the configs it chose (int4 rows on
# sysq's Triton GEMV: SYSQ_GEMV=all), fp beside them in the same process.
source scripts/h200_session5/env.sh
R=/tmp/res5; mkdir -p $R
timeout 200 python3 scripts/sweep_gemv.py --time-budget 120 --out $R/sweep > $R/sweep.log 2>&1
SYSQ_GEMV_CONFIGS=$R/sweep/gemv_configs.json SYSQ_GEMV=all timeout 280 python3 scripts/bench_generate.py --device cuda \
  --model config:llama3-8b --phases decode1 --modes compiled --lm-head --rows fp,fp+fused,w8a16+fused,w4a16+fused \
  --kernel-table --time-budget 240 --out $R/decode-tuned > $R/decode-tuned.log 2>&1
tar czf $OUT/callB5.tgz -C /tmp res5/sweep res5/sweep.log res5/decode-tuned res5/decode-tuned.log
tail -40 $R/sweep.log
echo "=== decode-tuned"; grep -E "^kernel table|GEMV/GEMM: |^\| |Error|error" $R/decode-tuned.log | head -30
