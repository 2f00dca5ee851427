# call B14 (right after A14, same machine; carry .gpu/a .gpu/whl2p): the GGUF's second piece
source scripts/h200_session14/env.sh
ls /tmp/gg.* 2>/dev/null
