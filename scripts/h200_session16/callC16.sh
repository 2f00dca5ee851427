# call C16 (right after B16, same machine; carry .gpu/b): the GGUF complete, then issue 15's w4a4+kv4 learned step
# with and without the learned activation clip ratios (learn_act_clip, +actclip) side by side on the one H200
# (SmolLM2 fp32, 32 calibration windows, the auto+learned plan made once by the first probe and loaded by the others;
# held-out WikiText-2 test windows 0-39 and 40-79).
# GRID: steps:windows:seed:amp:loss:actclip (amp bf16 or fp32; loss mse or token; actclip true or false).
source scripts/h200_session16/env.sh
export DEVICE=cuda NW=40 CN=32 OFF=0,40 PROBE_CACHE=/tmp/p16 PROBE_KEEP_MITIGATED=1 OMP_NUM_THREADS=1
R=/tmp/res16; mkdir -p $R
C='w4a4+g32+kv4g32+learned200x1@auto+learned'
probe() {   # steps windows seed amp loss actclip
  local a=""; [ "$4" = bf16 ] && a=",learn_amp=bf16"
  ( timeout ${PROBE_S:-560} python3 scripts/int4_probe.py "$C$a,learn_steps=$1,learn_batch_size=$2,learn_seed=$3,learn_loss=$5,learn_act_clip=$6" \
      > $R/p_$1x$2_s$3_$4_$5_ac$6.log 2>&1 ) &
}
GRID=${GRID:-"150:2:0:bf16:mse:false 150:2:1:bf16:mse:true 150:2:2:bf16:mse:true 125:2:0:bf16:mse:true 125:2:3:bf16:mse:true 75:4:0:bf16:mse:true 200:8:0:fp32:mse:true"}
FIRST=${FIRST:-150:2:0:bf16:mse:true}
IFS=: read s b e a l c <<< "$FIRST"; probe $s $b $e $a $l $c    # makes the mitigated model (atomic save), the others load it
for i in $(seq 1 120); do ls /tmp/p16/mitigated_32_*.pt >/dev/null 2>&1 && break; sleep 3; done
echo "mitigated model after $((i * 3)) s"
for g in $GRID; do IFS=: read s b e a l c <<< "$g"; probe $s $b $e $a $l $c; done
wait
grep -h PROBE $R/*.log | sort
for f in $R/*.log; do grep -q PROBE $f || { echo "=== $f"; tail -c 600 $f; }; done
cp $R/*.log $OUT/
