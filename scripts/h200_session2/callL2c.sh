# call L2c (nvidia-h200-x2): the GGUF's last piece completes the default model; accuracy jobs only, side by side:
# GPU0 the mitigation table (measured auto against the rules) and the static FP8 table; GPU1 the INT4 table (both
# window sets, auto-round) and real-vs-simulated perplexity of the static recipes; both GPUs lm-eval one GPU vs
# data-parallel on two.
source scripts/h200_session/env.sh
R=/tmp/res; mkdir -p $R
export OMP_NUM_THREADS=4 SYSQ_PEER_VENVS=/tmp/venvs
mkdir -p /tmp/venvs/autoround/bin && printf '#!/bin/sh\nPYTHONPATH=/tmp/site exec python3 "$@"\n' > /tmp/venvs/autoround/bin/python && chmod +x /tmp/venvs/autoround/bin/python && touch /tmp/venvs/autoround/.complete
python3 -c "import sysq; m, t = sysq.load('smollm2-135m'); print('smollm2 ok', sum(p.numel() for p in m.parameters()))" || exit 1
( export CUDA_VISIBLE_DEVICES=0
  timeout 420 python3 scripts/mitigation_table.py --device cuda --rows w8a8-static,w8a8,w4a16,w4a8,w4a4+kv4 --cols auto-fast,auto --extra fp --sensitivity '' --out $R/mit > $R/mit.log 2>&1 ) &
( export CUDA_VISIBLE_DEVICES=0
  timeout 420 python3 scripts/mitigation_table.py --device cuda --rows w8a8-fp8-static --cols none,auto --extra fp --sensitivity '' --out $R/fp8-acc > $R/fp8.log 2>&1 ) &
( export CUDA_VISIBLE_DEVICES=1
  timeout 430 python3 scripts/int4_table.py --device cuda --quiet --time-limit 240 --out $R/int4 > $R/int4.log 2>&1 ) &
( export CUDA_VISIBLE_DEVICES=1
  timeout 300 python3 scripts/real_ppl.py --device cuda --recipes w8a8-static,w8a8-fp8-static --out $R/real-ppl-static > $R/real-ppl-static.log 2>&1 ) &
( timeout 420 bash scripts/h200_session2/lmeval_dp.sh $R/lmeval > $R/lmeval.log 2>&1 ) &
wait
tar czf $OUT/callL2c.tgz --exclude='*.safetensors' --exclude='*.pt' -C /tmp res
for f in $R/*.log; do echo "=== $f"; tail -c 1500 $f; done
