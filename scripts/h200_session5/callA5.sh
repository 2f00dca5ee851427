# call A5 (after the T1 transfer in the same command; needs only .gpu/whl1): the Llama-3-8B-shaped jobs (random bf16
# weights built on the GPU). Issue 12: detect against a plain forward with the fused site reduction and the torch
# form side by side (16 x 512, batch 8 with the profile; batch 4). Issue 11: decode batch 1 compiled, every row, with
# sysq_decode attention, the shared cache counter and the gated int8 GEMV in the +fused rows (docs/DECODE.md).
source scripts/h200_session5/env.sh
R=/tmp/res5; mkdir -p $R
timeout 170 python3 scripts/bench_scale.py --config 8b --batch-size 8 --steps forward,detect,profile --reduce auto,torch --out $R/detect-b8 > $R/detect-b8.log 2>&1
timeout 100 python3 scripts/bench_scale.py --config 8b --batch-size 4 --steps forward,detect --out $R/detect-b4 > $R/detect-b4.log 2>&1
timeout 240 python3 scripts/bench_generate.py --device cuda --model config:llama3-8b --phases decode1 --modes compiled \
  --lm-head --rows fp,fp+fused,w8a16+fused,w4a16+fused --kernel-table --time-budget 200 --out $R/decode-attn > $R/decode-attn.log 2>&1
tar czf $OUT/callA5.tgz -C /tmp res5
for f in $R/detect*.log; do echo "=== $f"; grep -vE "^\s*$" $f | grep -E "^\| (forward|detect|profile)|fused site|x forward|Error|error" | head -12; done
echo "=== decode-attn"; grep -E "^kernel table|GEMV/GEMM: |^\| |tok/s|Error|error|attention sysq" $R/decode-attn.log | head -40
