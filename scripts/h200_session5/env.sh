# sourced at the start of every call of the fifth session: the earlier sessions' env.sh (wheels whl1 / whl2, data, the
# GGUF in pieces), then .gpu/whl3: llm-compressor 0.14.0.1 (pure Python; runs on whl1's transformers 5.24 and
# compressed-tensors 0.20.1) and bitsandbytes 0.50.2 repacked with its cuda130 library only
# (scripts/h200_session5/repack_bnb.py; 3.4 MiB instead of 41 MiB)
source scripts/h200_session/env.sh
if [ -d .gpu/whl3 ] && [ ! -f /tmp/site/.w3 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl3/*.whl && touch /tmp/site/.w3
fi
# the peers' "virtual environments": the device's python3 with the carried packages (SYSQ_PEER_VENVS)
export SYSQ_PEER_VENVS=/tmp/venvs
for v in autoround llmcompressor; do
  mkdir -p /tmp/venvs/$v/bin && printf '#!/bin/sh\nPYTHONPATH=/tmp/site exec python3 "$@"\n' > /tmp/venvs/$v/bin/python
  chmod +x /tmp/venvs/$v/bin/python && touch /tmp/venvs/$v/.complete
done
