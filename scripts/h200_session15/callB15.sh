# call B15 (right after A15, same machine; carry .gpu/a): the GGUF's second piece
source scripts/h200_session15/env.sh
ls /tmp/gg.* 2>/dev/null
