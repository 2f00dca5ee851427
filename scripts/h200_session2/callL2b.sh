# call L2b: the lm-eval wheels, the second data set and the GGUF's second piece; decode batch 1 alone on the
# machine: int4 (tinygemm) and int8 (Triton GEMV), lm_head quantized too.
source scripts/h200_session/env.sh
R=/tmp/res; mkdir -p $R
python3 -c "import lm_eval, accelerate; print('lm_eval', lm_eval.__version__, 'accelerate', accelerate.__version__)"
CUDA_VISIBLE_DEVICES=1 timeout 150 python3 scripts/bench_generate.py --device cuda --model config:llama3-8b --phases decode1 --rows fp,w4a16,w8a16 --modes compiled --lm-head --time-budget 100 --out $R/decode-final > $R/decode-final.log 2>&1
tar czf $OUT/callL2b.tgz -C /tmp res/decode-final res/decode-final.log
tail -c 2500 $R/decode-final.log
