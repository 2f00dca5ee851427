# call C25 (from branch normtune, 7b25b45: learn_norm_lr is not on main; right after scripts/h200_session20/callA20.sh and callB20.sh, same machine; carry .gpu/b): issue 15's
# learned step with the norms that feed each layer's linears tuned alongside the rounding (learn_norm_lr, Norm
# Tweaking), at the budgets that fit 10 minutes on a 2-core AVX2 CPU, over seeds on one H200. SmolLM2 fp32, 32
# calibration windows, held-out WikiText-2 test windows 0-39 and 40-79. w4a16: w4a16@auto (learned alone, per-token
# loss, float zeros, g64), its budget overridden. w4a4+kv4: the auto+learned plan with float zeros, rotated keys and
# +actclip, made once by the first a4 probe. GRID entries: kind:steps:windows:norm_lr:seed[:lr] (norm_lr 0: not tuned).
source scripts/h200_session20/env.sh
export DEVICE=cuda NW=40 CN=32 OFF=0,40 PROBE_CACHE=/tmp/p25 PROBE_KEEP_MITIGATED=1 OMP_NUM_THREADS=1
R=${R:-/tmp/res25}; mkdir -p $R
declare -A C=([a4]='w4a4+g32+fz+kv4g32+kvrot+learned200x1@auto+learned,learn_act_clip=true' [a16]='w4a16@auto')
probe() {   # kind steps windows norm_lr seed [lr]
  local l=""; [ -n "$6" ] && l=",learn_lr=$6"
  ( timeout ${PROBE_S:-560} python3 scripts/int4_probe.py "${C[$1]},learn_amp=null,learn_steps=$2,learn_batch_size=$3,learn_norm_lr=$4,learn_seed=$5$l" \
      > $R/p_$1_$2x$3_n$4_s$5${6:+_lr$6}.log 2>&1 ) &
}
GRID=${GRID:-"a16:150:1:0.3:0 a16:150:1:0.3:1 a16:150:1:0.3:2 a16:150:1:0.3:3 a16:150:1:0.3:4 a16:150:1:0.1:0 a16:150:1:0.1:1 a16:150:1:0.1:2 a16:200:1:0.3:0 a16:200:1:0.3:1 a16:200:1:0.3:2 a16:120:1:0.3:0 a16:120:1:0.3:1 a16:120:1:0.3:2 a16:150:1:1:0 a16:150:1:1:1"}
for g in $GRID; do IFS=: read k s b n e l <<< "$g"; probe $k $s $b $n $e $l; done
collect_probes $R
