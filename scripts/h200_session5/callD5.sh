# call D5 (last, same machine, after I5 completed the GGUF): issue 12's same-report check on SmolLM2: the CPU
# in-memory report against the fused pass and the torch form on the GPU (fed the CPU forward's activations), and
# the model on the GPU, fused against torch (scripts/check_detect_same.py --gpu).
source scripts/h200_session5/env.sh
R=/tmp/res5; mkdir -p $R
timeout 420 python3 scripts/check_detect_same.py --ref this --skip-sequential --gpu cuda > $R/same.log 2>&1; echo "rc $?"
cp $R/same.log $OUT/
tail -30 $R/same.log
