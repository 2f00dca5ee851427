# call E8 (issue 12; any one-H200 machine, no carry; ~3-4 minutes): the site-reduction kernel designs side by side
# (sysq/_reduce_triton.py: fused = today's, split, wide; docs/DETECT_FUSED.md "Eighth session"), each against a plain
# read and checked against the torch form; then the 8B detect against a plain forward with the fastest design
# whose values equal the torch form's selected by SYSQ_REDUCE_KERNEL / SYSQ_REDUCE_TILE / SYSQ_REDUCE_TOKEN_TILE.
source scripts/h200_session5/env.sh
R=/tmp/res8e; mkdir -p $R
timeout 100 python3 scripts/bench_reduce.py --reps 10 --out $R/reduce --tiles \
  split:8,32,1024,4,1,1/8,512,4 split:4,32,1024,4,1,0 split:4,32,256,4,0,1 split:2,32,1024,4,1,1/4,1024,4 \
  split:4,64,2048,8,1,1 split:4,16,1024,4,1,1/4,256,4 wide:4,32,256,4,0,1 wide:2,32,1024,4,1,1 fused:16,64,128,8 \
  > $R/reduce.log 2>&1; echo "reduce rc $?"
# the fastest "sites fused" row that equals the torch form (default: split's default tile)
BEST=$(python3 - $R/reduce/bench_reduce.json <<'PY'
import json, sys
try:
    rows = [r for r in json.load(open(sys.argv[1]))["rows"] if r["row"] == "sites fused" and r.get("same")]
    r = min(rows, key=lambda r: r["ms"])
    print(f"SYSQ_REDUCE_KERNEL={r['kernel']} SYSQ_REDUCE_TILE={r['tile']} SYSQ_REDUCE_TOKEN_TILE={r['token_tile']}")
except Exception:
    print("SYSQ_REDUCE_KERNEL=split")
PY
)
echo "selected: $BEST"
env $BEST timeout 125 python3 scripts/bench_scale.py --config 8b --batch-size 8 --steps forward,detect,profile \
  --reduce auto,torch --out $R/detect-b8 > $R/detect-b8.log 2>&1; echo "scale rc $?"
echo "$BEST" > $R/selected.txt
cp -r $R/* $OUT/
grep -E "^device|^\| (read|sites|weights|attention)" $R/reduce.log | cut -c1-150 | head -40
grep -E "^\| (forward|detect|profile)|fused site|Error|error" $R/detect-b8.log | cut -c1-260 | head -12
