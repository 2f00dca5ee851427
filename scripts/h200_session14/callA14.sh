# call A14 (fresh machine; carry .gpu/c .gpu/whl1 .gpu/data .gpu/data2): the wheels, the data and the GGUF's first
# piece; nothing timed (the GGUF is complete after call C14 brings the last piece)
source scripts/h200_session14/env.sh
ls /tmp/gg.* 2>/dev/null
