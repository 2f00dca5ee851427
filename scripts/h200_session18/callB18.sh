# call B18 (issue 12; one H200; carry .gpu/whl1; ~2 min): device_sections.py again with the device's idle gaps
# between kernels charged to the function that launched the kernel after each gap.
source scripts/h200_session5/env.sh
R=/tmp/resB18; mkdir -p $R
timeout 150 python3 scripts/h200_session18/device_sections.py --top 40 > $R/sections.log 2>&1; echo "sections rc $?"
sed -n '/^detect:/,/^plain forward,/p' $R/sections.log | head -75
cp -r $R $OUT/
