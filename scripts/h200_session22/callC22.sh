# call C22 (from branch clipinit, which has learn_init; right after scripts/h200_session20/callA20.sh and callB20.sh, same machine; carry .gpu/b): issue 15's
# learned step from a searched clip start (learn_init=clip) against the RTN start, at the step counts that fit 10
# minutes on a 2-core AVX2 CPU (float32), side by side over seeds on one H200. SmolLM2 fp32, 32 calibration windows,
# held-out WikiText-2 test windows 0-39 and 40-79.
# w4a16: w4a16@auto (learned alone, per-token loss, float zeros, g64), its budget and precision overridden.
# w4a4+kv4: the auto+learned plan with float zeros and rotated keys, made once by the first probe, +actclip, mse.
# GRID entries: kind:steps:windows:init:seed[:lr] (kind a4 or a16; lr: SignSGD's first step, default 1 / steps).
source scripts/h200_session20/env.sh
export DEVICE=cuda NW=40 CN=32 OFF=0,40 PROBE_CACHE=/tmp/p22 PROBE_KEEP_MITIGATED=1 OMP_NUM_THREADS=1
R=${R:-/tmp/res22}; mkdir -p $R
declare -A C=([a4]='w4a4+g32+fz+kv4g32+kvrot+learned200x1@auto+learned,learn_act_clip=true' [a16]='w4a16@auto')
probe() {   # kind steps windows init seed [lr]
  local l=""; [ -n "$6" ] && l=",learn_lr=$6"
  ( timeout ${PROBE_S:-560} python3 scripts/int4_probe.py "${C[$1]},learn_amp=null,learn_steps=$2,learn_batch_size=$3,learn_init=$4,learn_seed=$5$l" \
      > $R/p_$1_$2x$3_$4_s$5${6:+_lr$6}.log 2>&1 ) &
}
FIRST=${FIRST:-"a4:60:2:clip:0"}
WAVE1=${WAVE1:-"a16:100:1:rtn:1 a16:100:1:rtn:2 a16:100:1:clip:0 a16:100:1:clip:1 a16:100:1:clip:2 a16:120:1:clip:0 a16:120:1:clip:1 a16:120:1:clip:2 a16:140:1:clip:0 a16:120:1:rtn:0"}
WAVE2=${WAVE2:-"a4:60:2:clip:1 a4:60:2:clip:2 a4:60:2:rtn:1 a4:60:2:rtn:2 a4:70:2:clip:0 a4:70:2:clip:1"}
for g in $FIRST $WAVE1; do IFS=: read k s b i e l <<< "$g"; probe $k $s $b $i $e $l; done
for n in $(seq 1 200); do [ $(ls /tmp/p22/mitigated_32_*.pt 2>/dev/null | wc -l) -ge 1 ] && break; sleep 3; done
echo "mitigated model after $((n * 3)) s"
for g in $WAVE2; do IFS=: read k s b i e l <<< "$g"; probe $k $s $b $i $e $l; done
collect_probes $R
