# call B20 (right after A20, same machine; carry .gpu/a): the GGUF's first piece
source scripts/h200_session20/env.sh
ls /tmp/gg.* 2>/dev/null
