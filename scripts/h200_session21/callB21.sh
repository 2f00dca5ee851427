# call B21 (right after A21, same machine; carry .gpu/a): the GGUF's first piece
source scripts/h200_session21/env.sh
ls /tmp/gg.* 2>/dev/null
