# call A1 (nvidia-h200-x2, fresh machine; carries .gpu/whl1 and the GGUF's first piece): the Llama-3-8B shape split
# over both GPUs by accelerate, in bf16 (issue 12; last measured in fp32): detect, mitigate, static scales,
# perplexity, then GPTQ w4a16 on an 8-layer slice split over both.
source scripts/h200_session/env.sh
R=/tmp/res; mkdir -p $R
timeout 300 python3 scripts/bench_scale.py --config 8b --gpus 2 --steps split-detect,split-mitigate,split-static,split-ppl --out $R/split8b > $R/split8b.log 2>&1
timeout 200 python3 scripts/bench_scale.py --config 8b --layers 8 --gpus 2 --steps split-gptq --out $R/split8b-gptq > $R/split8b-gptq.log 2>&1
tar czf $OUT/callA1.tgz -C /tmp res
for f in $R/*.log; do echo "=== $f"; tail -c 2000 $f; done
