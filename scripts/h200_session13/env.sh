# sourced at the start of every call of the thirteenth session: the fifth session's env.sh (whl1 / whl3, data, data2,
# the default model's GGUF in pieces), then .gpu/whl2p: the peers' wheels that are not on the device image
# (auto-round 0.16.1, datasets 5.2.0, dill, multiprocess) and gguf 0.19.0 (`bash scripts/h200_session13/make_whl2p.sh`)
source scripts/h200_session5/env.sh
if [ -d .gpu/whl2p ] && [ ! -f /tmp/site/.w2p ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl2p/*.whl && touch /tmp/site/.w2p
fi
