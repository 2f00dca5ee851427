# call C17 (issue 12; one H200, fresh machine; carry .gpu/whl1 .gpu/old; ~5 min): (1) detect at this tree against
# 6e06df8 (before the seventeenth session; `git archive 6e06df8 sysq scripts/bench_scale.py` unpacked in .gpu/old) on
# the same machine, alternating processes of the scale bench's forward / detect pairs; (2) today's code on a model
# split over two devices (GPU 0 and the CPU: the two-GPU machine is not lent): an 8B-shaped 4-layer slice with its
# last 2 decoder layers on the CPU, 8 x 128 windows, every split step.
source scripts/h200_session5/env.sh
R=/tmp/resC17; mkdir -p $R
for c in new1 old1 new2 old2; do
  S=scripts/bench_scale.py; [ "${c#old}" != "$c" ] && S=.gpu/old/scripts/bench_scale.py
  (timeout 80 python3 $S --config 8b --batch-size 8 --reps 15 --steps forward,detect --out $R/$c) > $R/$c.log 2>&1
  echo "$c rc $?"; grep -E "^\| (forward|detect)" $R/$c.log | cut -c1-300
done
(timeout 280 python3 scripts/bench_scale.py --config 8b --layers 4 --cpu-layers 2 --windows 8 --seqlen 128 \
  --batch-size 4 --steps split-detect,split-mitigate,split-static,split-ppl,split-gptq --out $R/split) \
  > $R/split.log 2>&1; echo "split rc $?"; grep -E "^\|" $R/split.log | cut -c1-300; tail -3 $R/split.log
cp -r $R $OUT/
