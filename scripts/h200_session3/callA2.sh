# call A2: the lm-eval wheels, the WikiText data and the GGUF's second piece (a transfer call)
source scripts/h200_session/env.sh
python3 -c "import lm_eval, accelerate, auto_round; print('lm_eval', lm_eval.__version__, 'accelerate', accelerate.__version__)"
ls -la /tmp/gg.* /tmp/data
