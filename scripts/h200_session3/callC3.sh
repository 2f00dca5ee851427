# call C3 (after C1 = callB1's carry without a timing job, C2 = callA2's): static FP8 with no mitigation and with
# the auto plan on the default model, with the code that merged auto's split search (auto13) and the FP8 candidate
# set (fp8s3): issue 11's accuracy goal, auto <= 1.01x FP at 512 x 40.
source scripts/h200_session/env.sh
R=/tmp/res; mkdir -p $R
timeout 420 python3 scripts/mitigation_table.py --device cuda --rows w8a8-fp8-static --cols none,auto --extra fp --sensitivity '' --out $R/fp8-acc > $R/fp8.log 2>&1
tar czf $OUT/callC3.tgz --exclude='*.safetensors' --exclude='*.pt' -C /tmp res
tail -c 3000 $R/fp8.log
