# call C26 (after scripts/h200_session20/callA20.sh and callB20.sh on the same machine; carry .gpu/b): issue 15's
# learned step with the attention's linears trained in the first A steps only and the MLP's on the cached attention
# output after that (learn_attn_steps), at budgets that fit 10 minutes on a 2-core AVX2 CPU, over seeds on one H200.
# SmolLM2 fp32, 32 calibration windows, held-out WikiText-2 test windows 0-39 and 40-79; w4a16@auto (learned alone,
# per-token loss, float zeros, g64), its budget overridden. GRID entries: kind:steps:windows:attn_steps:seed.
source scripts/h200_session20/env.sh
export DEVICE=cuda NW=40 CN=32 OFF=0,40 PROBE_CACHE=/tmp/p26 PROBE_KEEP_MITIGATED=1 OMP_NUM_THREADS=1
R=${R:-/tmp/res26}; mkdir -p $R
declare -A C=([a4]='w4a4+g32+fz+kv4g32+kvrot+learned200x1@auto+learned,learn_act_clip=true' [a16]='w4a16@auto')
probe() {   # kind steps windows attn_steps seed
  ( timeout ${PROBE_S:-560} python3 scripts/int4_probe.py "${C[$1]},learn_amp=null,learn_steps=$2,learn_batch_size=$3,learn_attn_steps=$4,learn_seed=$5" \
      > $R/p_$1_$2x$3_a$4_s$5.log 2>&1 ) &
}
GRID=${GRID:-"a16:200:1:100:0 a16:200:1:100:1 a16:200:1:100:2 a16:200:1:100:3 a16:200:1:100:4 a16:150:1:75:0 a16:150:1:75:1 a16:150:1:75:2 a16:150:1:75:3 a16:150:1:75:4 a16:200:1:60:0 a16:200:1:60:1 a16:200:1:60:2 a16:170:1:85:0 a16:170:1:85:1 a16:170:1:85:2"}
for g in $GRID; do IFS=: read k s b a e <<< "$g"; probe $k $s $b $a $e; done
collect_probes $R
