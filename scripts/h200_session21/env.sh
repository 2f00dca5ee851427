# sourced at the start of every call of the twenty-first session: the thirteenth session's env (wheels .gpu/whl1 and
# .gpu/whl2p, data .gpu/data, the default model's GGUF in pieces .gpu/a, .gpu/b, .gpu/c carried by three calls on one
# warm machine). A fresh checkout has no .gpu/: scripts/h200_session8/make_whl1.sh, scripts/h200_session13/make_whl2p.sh,
# then the data and the pieces as in scripts/h200_session12/callT12.sh's header.
source scripts/h200_session13/env.sh
