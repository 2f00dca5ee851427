# call B16 (right after A16, same machine; carry .gpu/a): the GGUF's second piece
source scripts/h200_session16/env.sh
ls /tmp/gg.* 2>/dev/null
