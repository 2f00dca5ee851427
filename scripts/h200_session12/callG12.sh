# call G12 (issue 15; one H200, after T12a and T12b on the same machine; carry .gpu/c .gpu/whl1): w4a16's new auto
# default (200 x 1 learned steps under bf16 autocast, per-token loss, float zero points, g64) on SmolLM2 fp32,
# calibration 32 x 512 of WikiText-2 valid, held-out test windows 0-39 / 40-79 (scripts/int4_probe.py on the GPU).
source scripts/h200_session5/env.sh
R=/tmp/resG12; mkdir -p $R
DEVICE=cuda NW=40 CN=32 OFF=0,40 PROBE_CACHE=/tmp/int4g timeout 420 python3 scripts/int4_probe.py 'w4a16@auto' \
  > $R/probe.log 2>&1; echo "probe rc $?"
grep -E "PROBE|Error|error" $R/probe.log | head -8
cp -r $R $OUT/
