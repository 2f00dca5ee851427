# call C1 (nvidia-h200, fresh machine): the wheels and the GGUF's first piece only (a transfer call)
source scripts/h200_session/env.sh
