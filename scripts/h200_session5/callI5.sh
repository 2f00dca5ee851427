# call I5 (after T1, T2 on the same machine; carry .gpu/c .gpu/whl3 .gpu/data, about 45 MiB with the tree): the INT4
# table of issue 15 with every peer in the same run: auto-round 0.16.1 at its defaults, llm-compressor 0.14.0.1 GPTQ
# and AWQ (W4A16 g64), bitsandbytes 0.50.2 NF4, beside sysq's best row of each format, on both window sets (0-39,
# 40-79), SmolLM2-135M fp32, calibration 8 x 512. One int4_table process per part side by side on the one H200 (each
# with its own FP row: the rows are small-kernel bound, so they overlap), then one table with every part merged.
# Expected: about 6 minutes (the slowest part, auto-round, took 175 s alone in call I4).
source scripts/h200_session5/env.sh
R=/tmp/res5; mkdir -p $R
export OMP_NUM_THREADS=2
python3 -c "import sysq; m, t = sysq.load('smollm2-135m'); print('smollm2 ok', sum(p.numel() for p in m.parameters()))" || exit 1
python3 -c "
import bitsandbytes, llmcompressor, compressed_tensors, auto_round, transformers, torch
print('bitsandbytes', bitsandbytes.__version__, 'llmcompressor', llmcompressor.__version__, 'compressed-tensors',
      compressed_tensors.__version__, 'auto-round', auto_round.__version__, 'transformers', transformers.__version__)
w = bitsandbytes.nn.Params4bit(torch.randn(64, 64), requires_grad=False, quant_type='nf4').cuda()
print('bnb nf4 on cuda ok', w.dtype, w.shape)" 2>&1 | grep -v "^20..-..-..T" || echo "peer import check failed (the rows say why)"
T="python3 scripts/int4_table.py --device cuda --quiet --time-limit 300"
declare -A P=(
  [peer]=fp,autoround-w4a16-g64
  [peers]=fp,llmc-gptq-w4a16-g64,llmc-awq-w4a16-g64,bnb-nf4
  [w4a16-g64]=fp,w4a16-g64+fz+learned200x8@auto+learned
  [w4a16-g128]=fp,w4a16-g128+fz+learned200x8@auto+learned
  [w4a8]=fp,w4a8+g64+fz@auto+learned
  [w4a4]=fp,w4a4+g64+kv4g32@auto+learned
  [w4a4-ag64]=fp,w4a4+g64+ag64+kv4g32@auto+learned
)
for k in "${!P[@]}"; do
  ( timeout 460 $T --configs ${P[$k]} --out $R/i5-$k > $R/i5-$k.log 2>&1 ) &
done
wait
# one table: the auto-round part's rows (reused, nothing recomputed) with every other part merged, each against its own FP
M=""; for k in "${!P[@]}"; do [ $k != peer ] && [ -f $R/i5-$k/w0/results.json ] && M="$M --merge $R/i5-$k"; done
timeout 60 $T --configs ${P[peer]} --out $R/i5-peer $M > $R/i5.log 2>&1
tar czf $OUT/callI5.tgz --exclude='*.safetensors' --exclude='*.pt' --exclude='cache' -C /tmp res5
for f in $R/i5-*.log; do echo "=== $f"; tail -c 500 $f; done
cat $R/i5-peer/table.md
