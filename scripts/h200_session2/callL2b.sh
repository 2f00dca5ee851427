# call L2b: the lm-eval wheels, the second data set and the GGUF's second piece (setup only)
source scripts/h200_session/env.sh
python3 -c "import lm_eval, accelerate; print('lm_eval', lm_eval.__version__, 'accelerate', accelerate.__version__)"
