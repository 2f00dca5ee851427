# call A15 (fresh machine; carry .gpu/c .gpu/whl1 .gpu/data .gpu/data2): wheels, data, the GGUF's first piece
source scripts/h200_session15/env.sh
ls /tmp/gg.* 2>/dev/null
