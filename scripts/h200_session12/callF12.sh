# call F12 (issue 11; one H200; carry .gpu/whl1; < 4 min): the tensor-core int4 GEMV (branch int4tc) against tinygemm
# at the five 8B decode shapes, M=1, bf16, group 128, every config under CUDA graphs and checked against the float
# reference; writes $OUT/tc/gemv_configs.json in TUNED form.
source scripts/h200_session5/env.sh
R=/tmp/resF12; mkdir -p $R
timeout 230 python3 scripts/sweep_gemv.py --kinds int4 --int4-kernels tc --no-today --time-budget 170 --out $R/tc \
  > $R/tc.log 2>&1; echo "tc rc $?"
grep -viE "warn" $R/tc.log | tail -40 | cut -c1-260
cp -r $R $OUT/
