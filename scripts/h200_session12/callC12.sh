# call C12 (issue 12; one H200; carry .gpu/whl1; ~3 min): why detect on the 8B shape takes 0.35 s in some runs and
# 0.44 s in others (calls A12, B12): one form per process, with and without a full collection and a forward before
# each run; cudaMalloc and pinned-host allocations counted per run.
source scripts/h200_session5/env.sh
R=/tmp/resC12; mkdir -p $R
run() { n=$1; shift
  timeout 100 python3 scripts/bench_detect_gc.py --device cuda --config 8b --windows 16 --seqlen 512 --reps 8 "$@" \
    > $R/$n.log 2>&1; echo "$n rc $?"; grep -vi warn $R/$n.log | tail -3 | cut -c1-400; }
run paused-collect-forward --forms paused --collect --forward
run running-collect-forward --forms running --collect --forward
run paused-collect --forms paused --collect
run paused --forms paused
cp -r $R $OUT/
