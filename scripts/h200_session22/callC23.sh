# call C23 (after callA20 / callB20 on a fresh machine; carry .gpu/b): call C22's probes with another grid. C22 found the
# clip start no better than RTN's at 100-140 steps, the seed deciding +-0.015. Here, from the RTN start: w4a16 at the
# window-steps a 2-core AVX2 CPU runs in 10 minutes in float32 (150 x 1; 90 x 2 and 75 x 2, a window-step 15% cheaper
# there in pairs), a smaller SignSGD step, 200 x 1's spread over seeds, and w4a4+kv4 60 x 2 over more seeds and lr.
export R=/tmp/res23
export FIRST="a4:60:2:rtn:3"
export WAVE1="a16:150:1:rtn:0 a16:150:1:rtn:1 a16:150:1:rtn:2 a16:90:2:rtn:0 a16:90:2:rtn:1 a16:90:2:rtn:2 a16:75:2:rtn:0 a16:75:2:rtn:1 a16:200:1:rtn:1 a16:200:1:rtn:2 a16:150:1:rtn:0:0.005 a16:150:1:rtn:1:0.005"
export WAVE2="a4:60:2:rtn:4 a4:60:2:rtn:0:0.01 a4:60:2:rtn:1:0.01"
bash scripts/h200_session22/callC22.sh
