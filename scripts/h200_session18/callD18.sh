# call D18 (issue 12; one H200; carry .gpu/whl1; ~2 min): after c1 (the device copies cut), detect is bound by the
# host (C18's timeline: the device waits for the weights' launches and the last records): each labelled function's
# own host time per detect, and a cProfile by own time.
source scripts/h200_session5/env.sh
R=/tmp/resD18; mkdir -p $R
timeout 150 python3 scripts/h200_session18/host_sections.py --reps 5 --top 45 > $R/host.log 2>&1; echo "host rc $?"
sed -n '1,40p' $R/host.log
cp -r $R $OUT/
