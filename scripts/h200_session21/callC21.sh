# call C21 (right after scripts/h200_session20/callA20.sh and callB20.sh, same machine; carry .gpu/b): the GGUF
# complete, then issue 15's learned-step budgets for a CPU without native bf16 (float32), with the loss on a sample
# of each window's positions (learn_tokens), side by side on the one H200. SmolLM2 fp32, 32 calibration windows,
# held-out WikiText-2 test windows 0-39 and 40-79.
# w4a4+kv4: the auto+learned plan with float zeros and rotated keys, made once by the first probe, +actclip, mse.
# w4a16: w4a16@auto (learned alone, per-token loss, float zeros, g64), its budget and precision overridden.
# GRID entries: kind:steps:windows:tokens:seed (kind a4 or a16; tokens 0: every position).
# learn_tokens lives on branch tokensample (4e355b8, not merged): run this call from a checkout of that branch.
source scripts/h200_session20/env.sh
export DEVICE=cuda NW=40 CN=32 OFF=0,40 PROBE_CACHE=/tmp/p21 PROBE_KEEP_MITIGATED=1 OMP_NUM_THREADS=1
R=/tmp/res21; mkdir -p $R
declare -A C=([a4]='w4a4+g32+fz+kv4g32+kvrot+learned200x1@auto+learned,learn_act_clip=true' [a16]='w4a16@auto')
probe() {   # kind steps windows tokens seed
  local t=""; [ "$4" != 0 ] && t=",learn_tokens=$4"
  ( timeout ${PROBE_S:-560} python3 scripts/int4_probe.py "${C[$1]},learn_amp=null,learn_steps=$2,learn_batch_size=$3,learn_seed=$5$t" \
      > $R/p_$1_$2x$3_t$4_s$5.log 2>&1 ) &
}
FIRST=${FIRST:-"a4:100:2:128:0"}
WAVE1=${WAVE1:-"a16:100:2:128:0 a16:100:2:128:1 a16:100:2:128:2 a16:150:1:128:0 a16:75:4:128:0 a16:100:1:0:0 a16:200:1:0:0"}
WAVE2=${WAVE2:-"a4:100:2:128:1 a4:100:2:128:2 a4:100:2:128:3 a4:110:2:64:0 a4:110:2:64:1 a4:75:4:64:0 a4:75:4:64:1 a4:60:2:0:0"}
for g in $FIRST $WAVE1; do IFS=: read k s b t e <<< "$g"; probe $k $s $b $t $e; done
for i in $(seq 1 200); do [ $(ls /tmp/p21/mitigated_32_*.pt 2>/dev/null | wc -l) -ge 1 ] && break; sleep 3; done
echo "mitigated model after $((i * 3)) s"
for g in $WAVE2; do IFS=: read k s b t e <<< "$g"; probe $k $s $b $t $e; done
wait
grep -h PROBE $R/*.log | sort
for f in $R/*.log; do grep -q PROBE $f || { echo "=== $f"; tail -c 600 $f; }; done
tar czf $OUT/res21.tgz -C /tmp res21
