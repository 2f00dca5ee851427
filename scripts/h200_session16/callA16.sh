# call A16 (fresh machine; carry .gpu/c .gpu/whl1 .gpu/data .gpu/data2 .gpu/whl2p): wheels, data, the GGUF's first piece
source scripts/h200_session16/env.sh
ls /tmp/gg.* 2>/dev/null
