# call X18 (issue 12; nvidia-h200-x2, fresh machine; carry .gpu/whl1; ~6 min; written in the eighteenth session, not
# run: the two-GPU machine was not lent): today's code on the Llama-3-8B shape split over both GPUs by accelerate, bf16
# (the third session's call A1 measured it with that day's code): detect, mitigate, static scales, perplexity, then
# GPTQ w4a16 on an 8-layer slice split over both.
source scripts/h200_session5/env.sh
R=/tmp/resX18; mkdir -p $R
timeout 300 python3 scripts/bench_scale.py --config 8b --gpus 2 --steps split-detect,split-mitigate,split-static,split-ppl \
  --out $R/split8b > $R/split8b.log 2>&1; echo "split rc $?"; grep -E "^\|" $R/split8b.log | cut -c1-220
timeout 200 python3 scripts/bench_scale.py --config 8b --layers 8 --gpus 2 --steps split-gptq --out $R/split8b-gptq \
  > $R/split8b-gptq.log 2>&1; echo "gptq rc $?"; grep -E "^\|" $R/split8b-gptq.log | cut -c1-220
cp -r $R $OUT/
