# call I5 (after T1, T2 on the same machine; carry .gpu/c .gpu/whl3 .gpu/data .gpu/data2 (int4_table asks for PIQA/ARC too), about 49 MiB with the tree): the INT4
# table of issue 15 with every peer in the same run: auto-round 0.16.1 at its defaults, llm-compressor 0.14.0.1 GPTQ
# and AWQ (W4A16 g64), bitsandbytes 0.50.2 NF4, beside sysq's best row of each format, on both window sets (0-39,
# 40-79), SmolLM2-135M fp32, calibration 8 x 512 (32 x 512 where a part says so). One int4_table process per part
# side by side on the one H200 (each with its own FP row: the rows are small-kernel bound, so they overlap), then one
# table with every part merged. Expected: about 7 minutes (auto-round, the slowest part, took 175 s alone in call I4);
# each part is stopped at 400 s, so the merged table is written within the 600 s of one call. If parts time out, run
# it again on the same machine with I5_PARTS naming them: finished parts are kept in $R and merged.
# A dry run of the orchestration on a CPU (tiny model, no env.sh): I5_DRY=1 T="python scripts/int4_table.py --model
# /tmp/tinyllama --windows 1 --seqlen 32 --calib-n 2 --quiet" OUT=/tmp/i5 R=/tmp/i5/res bash scripts/h200_session5/callI5.sh
[ -n "$I5_DRY" ] || source scripts/h200_session5/env.sh
R=${R:-/tmp/res5}; mkdir -p $R
export OMP_NUM_THREADS=1      # 13 processes on 16 cores
[ -n "$I5_DRY" ] || python3 -c "import sysq; m, t = sysq.load('smollm2-135m'); print('smollm2 ok', sum(p.numel() for p in m.parameters()))" || exit 1
[ -n "$I5_DRY" ] || python3 -c "
import bitsandbytes, llmcompressor, compressed_tensors, auto_round, transformers, torch
print('bitsandbytes', bitsandbytes.__version__, 'llmcompressor', llmcompressor.__version__, 'compressed-tensors',
      compressed_tensors.__version__, 'auto-round', auto_round.__version__, 'transformers', transformers.__version__)
w = bitsandbytes.nn.Params4bit(torch.randn(64, 64), requires_grad=False, quant_type='nf4').cuda()
print('bnb nf4 on cuda ok', w.dtype, w.shape)" 2>&1 | grep -v "^20..-..-..T" || echo "peer import check failed (the rows say why)"
T=${T:-"python3 scripts/int4_table.py --device cuda --quiet --time-limit 300"}
# part name, then its int4_table arguments (best-*: scripts/int4_table.py BEST); the table lists the parts in this order
P=(
  "peer --configs best-peer"
  "peers --configs best-peers"
  "w4a16-g64 --configs best-w4a16-g64"
  "w4a16-g128 --configs best-w4a16-g128"
  "w4a8 --configs best-w4a8"
  "w4a4 --configs fp,w4a4+g64+kv4g32@auto+learned"
  "w4a4-ag64 --configs fp,w4a4+g64+ag64+kv4g32@auto+learned"
  # issue 15's w4a16 <= 1.06x probes (docs/INT4.md, fifth session): the learned step's loss per token (the BOS /
  # sink token's huge activations no longer weigh most of the block-output MSE), and 32 calibration windows instead
  # of 8 with auto-round on the same 32 beside it (same 200 steps x 8 windows: the same cost per step)
  "w4a16-g64-tok --configs best-w4a16-g64-tok"
  "w4a16-g64-c32 --configs best-w4a16-g64 --calib-n 32"
  "peer-c32 --configs best-peer --calib-n 32"
  "w4a16-g64-tok-c32 --configs best-w4a16-g64-tok --calib-n 32"
  "w4a16-g128-tok --configs best-w4a16-g128-tok"
  "w4a16-g64-tok-noplan --configs best-w4a16-g64-tok-noplan"
  # w4a4 with per-token A4: the same per-token loss in its learned step (fifth session, not run on the CPU)
  "w4a4-tok --configs fp,w4a4+g64+kv4g32+tokenloss@auto+learned"
)
# I5_PARTS="peer peers ...": only those parts (a second call on the same warm machine runs the rest; the merge below
# takes every part whose results are in $R, whichever call made them)
Q=(); for p in "${P[@]}"; do [ -z "$I5_PARTS" ] || [[ " $I5_PARTS " == *" ${p%% *} "* ]] && Q+=("$p"); done
for p in "${Q[@]}"; do
  set -- $p; k=$1; shift
  ( timeout 400 $T "$@" --out $R/i5-$k > $R/i5-$k.log 2>&1 ) &
done
wait
# one table: a fresh FP row with every part that has results merged (each row against its own part's FP; nothing
# is recomputed, so a part stopped by its timeout costs only its missing rows)
M=""; for p in "${P[@]}"; do k=${p%% *}; [ -f $R/i5-$k/w40/results.json ] && M="$M --merge $R/i5-$k"; done
timeout 90 $T --configs fp --out $R/i5-all $M > $R/i5.log 2>&1
tar czf $OUT/callI5.tgz --exclude='*.safetensors' --exclude='*.pt' --exclude='cache' -C $(dirname $R) $(basename $R)
for f in $R/i5-*.log; do echo "=== $f"; tail -c 500 $f; done
cat $R/i5-all/table.md
