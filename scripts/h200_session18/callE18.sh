# call E18 (issue 12; one H200; three calls on one warm machine: carry (1) .gpu/whl1 .gpu/whl2 .gpu/c .gpu/data
# .gpu/data2 .gpu/old with E18_PART=t (it ran without .gpu/whl2, gguf's wheel, so check_detect_same could not read
# the GGUF: results/h200/s18/e18/same.log), (2) .gpu/a with E18_PART=t, (3) .gpu/b: the default model's GGUF arrives in pieces):
# detect's report at this tree on SmolLM2 16 x 512, CPU form against the GPU's forms (check_detect_same --gpu), and
# the grouped launches against one launch per site on the 8B shape (the same report, and their times alternating).
source scripts/h200_session5/env.sh
[ "$E18_PART" = t ] && { ls /tmp/gg.* 2>/dev/null; exit 0; }
R=/tmp/resE18; mkdir -p $R
timeout 300 python3 scripts/check_detect_same.py --ref this --skip-sequential --gpu cuda > $R/same.log 2>&1
echo "same rc $?"; tail -8 $R/same.log
timeout 200 python3 scripts/check_detect_grouped.py --config 8b --device cuda --reps 7 > $R/grouped.log 2>&1
echo "grouped rc $?"; tail -4 $R/grouped.log
cp -r $R $OUT/
