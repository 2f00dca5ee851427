# call A21 (fresh machine; carry .gpu/c .gpu/whl1 .gpu/data .gpu/whl2p): wheels, data, the GGUF's last piece
source scripts/h200_session21/env.sh
ls /tmp/gg.* 2>/dev/null
