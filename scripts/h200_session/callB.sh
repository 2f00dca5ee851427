# call B: the default model's GGUF completed; GPU0 the SmolLM2 speed bench alone, then accuracy;
# GPU1 accuracy tables (FP8, mitigation auto vs rules, INT4 with auto-round, real vs simulated), concurrent
source scripts/h200_session/env.sh
R=/tmp/res; mkdir -p $R
python3 -c "import sysq; m,t=sysq.load('smollm2-135m'); print('smollm2 ok', sum(p.numel() for p in m.parameters()))" || exit 1
mkdir -p /tmp/venvs/autoround/bin && printf '#!/bin/sh\nPYTHONPATH=/tmp/site exec python3 "$@"\n' > /tmp/venvs/autoround/bin/python && chmod +x /tmp/venvs/autoround/bin/python && touch /tmp/venvs/autoround/.complete
export SYSQ_PEER_VENVS=/tmp/venvs
( export CUDA_VISIBLE_DEVICES=0
  timeout 230 python3 scripts/bench_generate.py --device cuda --model smollm2-135m --rows fp,w8a16,w4a16,w8a8-fp8-static,w8a8-fp8,w8a8 --modes compiled,eager --phases prefill,decode1 --prefill 8x512 --time-budget 150 --out $R/bench-smollm2 > $R/bench-smollm2.log 2>&1
  timeout 330 python3 scripts/real_ppl.py --device cuda --out $R/real-ppl > $R/real-ppl.log 2>&1 ) &
( export CUDA_VISIBLE_DEVICES=1
  timeout 560 python3 scripts/mitigation_table.py --device cuda --rows w8a8-fp8-static,w8a8-fp8 --cols none,smoothquant,rotate,rotate+preserve-tokens,auto-fast,auto --extra fp --sensitivity '' --out $R/fp8-acc > $R/fp8-acc.log 2>&1 ) &
( export CUDA_VISIBLE_DEVICES=1
  timeout 560 python3 scripts/mitigation_table.py --device cuda --rows w8a8-static,w8a8,w4a16,w4a8,w4a4+kv4 --cols none,smoothquant,auto-fast,auto --extra fp --sensitivity '' --out $R/mit > $R/mit.log 2>&1 ) &
( export CUDA_VISIBLE_DEVICES=1
  timeout 560 python3 scripts/int4_table.py --device cuda --quiet --configs fp,w4a16-g64,w4a16-g64+fz,w4a16-g64+fz+learned,w4a16-g64@auto,w4a16-g64+fz@auto+learned,w4a16-g128,w4a16-g128+fz@auto+learned,w4a8@auto,w4a8+fz@auto+learned,w4a4+kv4@auto --out $R/int4 > $R/int4.log 2>&1 ) &
wait
tar czf $OUT/callB.tgz -C /tmp res
for f in $R/*.log; do echo "=== $f"; tail -c 1200 $f; done
