# call I13 (after T13a, T13b on the same machine; carry .gpu/c .gpu/whl3 .gpu/data .gpu/data2): issue 15's INT4 table
# in one run with the defaults users get today. Every peer (auto-round 0.16.1 at its defaults, llm-compressor 0.14
# GPTQ and AWQ, bitsandbytes NF4) beside sysq's `auto` for w4a16 (200 x 1 learned steps under bf16 autocast since the
# twelfth session), w4a8 and w4a4+kv4g32, all on the same 32 calibration windows (WikiText-2 valid, seed 0, sysq
# quantize's default), SmolLM2-135M fp32, WikiText-2 test windows 0-39 and 40-79. One int4_table process per part side
# by side on the one H200 (each with its own FP row), each stopped at 520 s, then one merged table.
# I13_PARTS="a b": only those parts (a second call on the same warm machine runs the rest; the merge takes every part
# whose results are in $R). Dry run on a CPU: I13_DRY=1 T="python scripts/int4_table.py --model /tmp/tinyllama
# --windows 1 --seqlen 32 --quiet" OUT=/tmp/i13 R=/tmp/i13/res bash scripts/h200_session13/callI13.sh
[ -n "$I13_DRY" ] || source scripts/h200_session13/env.sh
source scripts/h200_session5/parts.sh
R=${R:-/tmp/res13}; mkdir -p $R
export OMP_NUM_THREADS=1
[ -n "$I13_DRY" ] || python3 -c "
import bitsandbytes, llmcompressor, compressed_tensors, auto_round, datasets, transformers
print('bitsandbytes', bitsandbytes.__version__, 'llmcompressor', llmcompressor.__version__, 'compressed-tensors',
      compressed_tensors.__version__, 'auto-round', auto_round.__version__, 'datasets', datasets.__version__,
      'transformers', transformers.__version__)" 2>&1 | grep -v "^20..-..-..T" | tail -3
T=${T:-"python3 scripts/int4_table.py --device cuda --quiet --time-limit 420"}
P=(
  "peer --configs fp,autoround-w4a16-g64 --calib-n 32"
  "peers --configs fp,llmc-gptq-w4a16-g64,llmc-awq-w4a16-g64,bnb-nf4 --calib-n 32"
  "w4a16 --configs fp,w4a16@auto --calib-n 32"
  "w4a16-g128 --configs fp,w4a16-g128+fz+learned200x1+tokenloss+amp --calib-n 32"
  "rtn --configs fp,w4a16-g64,w4a16-g64+fz --calib-n 32"
  "w4a8 --configs fp,w4a8@auto --calib-n 32"
  "w4a4 --configs fp,w4a4+kv4g32@auto --calib-n 32"
  # run in a second call on the same machine (I13_PARTS="j7 g32"): w4a4's auto searched its plan on per-channel
  # weights (1.697x) while the seventh session's best row names groups of 32 (fixed since: mitigate/api.py _candidate)
  "j7 --configs fp,w4a4+g32+kv4g32+learned200x8@auto+learned --calib-n 32"
  "g32 --configs fp,w4a4+g32+kv4g32@auto --calib-n 32"
)
PARTS=$I13_PARTS MERGE_ARGS="--calib-n 32" run_parts i13 520
