# call D16 (issue 12; one H200, fresh machine; carry .gpu/whl1; ~5 min): does the host's thread pool make detect's
# slow state? The scale bench's forward / detect pairs (8B shape, 16 x 512, batch 8) in four processes one after the
# other, alternating torch's default intra-op threads with one (OMP_NUM_THREADS=1 MKL_NUM_THREADS=1).
source scripts/h200_session5/env.sh
R=/tmp/resD16; mkdir -p $R
python3 -c "import os, torch; print('cpus', os.cpu_count(), 'affinity', len(os.sched_getaffinity(0)), 'torch threads', torch.get_num_threads())"
for c in dflt1 omp1a dflt2 omp1b; do
  t=""; case $c in omp1*) t="OMP_NUM_THREADS=1 MKL_NUM_THREADS=1";; esac
  (env $t timeout 80 python3 scripts/bench_scale.py --config 8b --batch-size 8 --reps 15 --steps forward,detect \
    --out $R/$c) > $R/$c.log 2>&1; echo "$c ($t) rc $?"
  grep -E "^\| (forward|detect)" $R/$c.log | cut -c1-420
done
cp -r $R $OUT/
