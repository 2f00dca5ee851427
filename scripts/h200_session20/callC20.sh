# call C20 (right after B20, same machine; carry .gpu/b): the GGUF complete, then issue 15's w4a4+kv4 learned step
# with rotated keys (+kvrot, QuaRot's R3) side by side on the one H200: the CPU budget (125 x 2, float zeros,
# +actclip, bf16 autocast) over seeds 0-3, and auto's default (200 x 8, fp32, integer zeros) with +kvrot.
# SmolLM2 fp32, 32 calibration windows, each plan made once by its FIRST probe and loaded by the others; held-out
# WikiText-2 test windows 0-39 and 40-79. GRID: plan:steps:windows:seed:amp:actclip (plan fz or int).
source scripts/h200_session20/env.sh
export DEVICE=cuda NW=40 CN=32 OFF=0,40 PROBE_CACHE=/tmp/p20 PROBE_KEEP_MITIGATED=1 OMP_NUM_THREADS=1
R=/tmp/res20; mkdir -p $R
declare -A C=([fz]='w4a4+g32+fz+kv4g32+kvrot+learned200x1@auto+learned' [int]='w4a4+g32+kv4g32+kvrot+learned200x8@auto+learned')
probe() {   # plan steps windows seed amp actclip
  local a=""; [ "$5" = bf16 ] && a=",learn_amp=bf16"
  ( timeout ${PROBE_S:-540} python3 scripts/int4_probe.py "${C[$1]}$a,learn_steps=$2,learn_batch_size=$3,learn_seed=$4,learn_act_clip=$6" \
      > $R/p_$1_$2x$3_s$4_$5_ac$6.log 2>&1 ) &
}
FIRST=${FIRST:-"fz:125:2:0:bf16:true int:200:8:0:fp32:false"}
GRID=${GRID:-"fz:125:2:1:bf16:true fz:125:2:2:bf16:true fz:125:2:3:bf16:true fz:100:2:0:bf16:true fz:100:2:1:bf16:true fz:200:8:0:fp32:true"}
for g in $FIRST; do IFS=: read p s b e a c <<< "$g"; probe $p $s $b $e $a $c; done   # each makes its plan's model
for i in $(seq 1 150); do [ $(ls /tmp/p20/mitigated_32_*.pt 2>/dev/null | wc -l) -ge 2 ] && break; sleep 3; done
echo "mitigated models after $((i * 3)) s"
for g in $GRID; do IFS=: read p s b e a c <<< "$g"; probe $p $s $b $e $a $c; done
wait
grep -h PROBE $R/*.log | sort
for f in $R/*.log; do grep -q PROBE $f || { echo "=== $f"; tail -c 600 $f; }; done
tar czf $OUT/res20.tgz -C /tmp res20
