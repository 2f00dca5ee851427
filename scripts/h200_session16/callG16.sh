# call G16 (issue 12; one H200, fresh machine; carry .gpu/whl1; ~2 min): cProfile of one detect at the 8B shape,
# sysq's functions by cumulative and own time (the report's tail after the last batch: call F16's timeline).
source scripts/h200_session5/env.sh
R=/tmp/resG16; mkdir -p $R
timeout 240 python3 scripts/h200_session16/detect_tail_profile.py > $R/cprofile.log 2>&1; echo "rc $?"
cp -r $R $OUT/
grep -E "ncalls|site_summary|_arrays|lifecycle|attention_summary|consistency|_outlier_tokens|_summary|site_lists|residual_channels|down_rows|statistics|flush|to_host|detect\)" $R/cprofile.log | head -40 | cut -c1-200
