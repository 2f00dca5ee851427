# call D17 (issue 12; one H200, fresh machine; carry .gpu/whl1; ~3 min): call C17's split run again after the fix
# of the CPU form's lifecycle hits (a layer's input on the previous layer's device): an 8B-shaped 4-layer slice, its
# last 2 decoder layers on the CPU and the rest on GPU 0, 8 x 128 windows, every split step.
source scripts/h200_session5/env.sh
R=/tmp/resD17; mkdir -p $R
(timeout 400 python3 scripts/bench_scale.py --config 8b --layers 4 --cpu-layers 2 --windows 8 --seqlen 128 \
  --batch-size 4 --steps split-detect,split-mitigate,split-static,split-ppl,split-gptq --out $R/split) \
  > $R/split.log 2>&1; echo "split rc $?"; grep -E "^\|" $R/split.log | cut -c1-300; tail -4 $R/split.log | cut -c1-400
cp -r $R $OUT/
