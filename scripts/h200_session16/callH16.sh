# call H16 (issue 12; one H200, fresh machine; carry .gpu/whl1; ~1 min): the arrays detect's site_lists reads at the
# 8B shape, and its time per part (dump_site_lists.py), to make it cheaper on the CPU against the real data.
source scripts/h200_session5/env.sh
timeout 200 python3 scripts/h200_session16/dump_site_lists.py $OUT 2>&1 | tail -8 | cut -c1-1500
ls -la $OUT
