# call C15 (right after B15, same machine; carry .gpu/b, and .gpu/whl2p (the gguf wheel) unless A15 carried it): the GGUF complete, then issue 15's
# w4a4+kv4 learned-step budgets side by side on the one H200 (SmolLM2 fp32, 32 calibration windows, the auto+learned
# plan made once by the first probe and loaded by the others; held-out WikiText-2 test windows 0-39 and 40-79).
# GRID: steps:windows:seed[:amp[:loss]] (amp bf16 as on the CPU, or fp32; loss mse or token).
source scripts/h200_session15/env.sh
export DEVICE=cuda NW=40 CN=32 OFF=0,40 PROBE_CACHE=/tmp/p15 PROBE_KEEP_MITIGATED=1 OMP_NUM_THREADS=1
R=/tmp/res15; mkdir -p $R
C='w4a4+g32+kv4g32+learned200x1@auto+learned'
probe() {   # steps windows seed amp loss
  local a=""; [ "$4" = bf16 ] && a=",learn_amp=bf16"
  ( timeout ${PROBE_S:-540} python3 scripts/int4_probe.py "$C$a,learn_steps=$1,learn_batch_size=$2,learn_seed=$3,learn_loss=$5" \
      > $R/p_$1x$2_s$3_$4_$5.log 2>&1 ) &
}
GRID=${GRID:-"150:2:1:bf16:mse 75:4:0:bf16:mse 75:4:1:bf16:mse 38:8:0:bf16:mse 38:8:1:bf16:mse 125:2:0:bf16:mse 200:8:0:bf16:mse"}
FIRST=${FIRST:-150:2:0:bf16:mse}
IFS=: read s b e a l <<< "$FIRST"; probe $s $b $e $a $l    # makes the mitigated model (atomic save), the others load it
for i in $(seq 1 120); do ls /tmp/p15/mitigated_32_*.pt >/dev/null 2>&1 && break; sleep 3; done
echo "mitigated model after $((i * 3)) s"
for g in $GRID; do IFS=: read s b e a l <<< "$g"; probe $s $b $e $a $l; done
wait
grep -h PROBE $R/*.log | sort
for f in $R/*.log; do grep -q PROBE $f || { echo "=== $f"; tail -c 600 $f; }; done
cp $R/*.log $OUT/
