# call E20 (issue 15; a fresh machine after A20 / B20 transfers, carry .gpu/b): auto's w4a4+kv4 default after the
# change (rotate-keys in the plan; the learned budget fitted to the device): `w4a4+kv4g32@auto` on the GPU (AutoRound's
# 200 x 8) and on the host's CPU (125 x 2, float zeros, learned activation clip; bf16 autocast where the CPU has it),
# seeds 0 and 1, each probe's plan searched where it runs. Held-out WikiText-2 test windows 0-39 and 40-79.
source scripts/h200_session20/env.sh
export NW=40 CN=32 OFF=0,40 PROBE_KEEP_MITIGATED=1
R=/tmp/resE20; mkdir -p $R
lscpu | grep -E "Model name|^CPU\(s\)"; lscpu | grep -o 'avx512_bf16\|amx_bf16' | sort -u | tr '\n' ' '; echo
python3 -c "import torch; print('cpu bf16 native', torch.cpu._is_avx512_bf16_supported(), torch.cpu._is_amx_tile_supported())"
C='w4a4+kv4g32@auto'
( DEVICE=cuda PROBE_CACHE=/tmp/pE20g OMP_NUM_THREADS=2 timeout 560 python3 scripts/int4_probe.py "$C" > $R/gpu.log 2>&1 ) &
( PROBE_CACHE=/tmp/pE20c OMP_NUM_THREADS=7 timeout 560 python3 scripts/int4_probe.py "$C" > $R/cpu_s0.log 2>&1 ) &
for i in $(seq 1 150); do ls /tmp/pE20c/mitigated_32_*.pt >/dev/null 2>&1 && break; sleep 3; done
echo "CPU mitigated model after $((i * 3)) s"
( PROBE_CACHE=/tmp/pE20c OMP_NUM_THREADS=7 timeout 480 python3 scripts/int4_probe.py "$C,learn_seed=1" > $R/cpu_s1.log 2>&1 ) &
wait
grep -h PROBE $R/*.log | sort
for f in $R/*.log; do echo "=== $f"; grep -E "WARNING|learned|Error" $f | tail -5; done
tar czf $OUT/resE20.tgz -C /tmp resE20
