# call C24 (right after C23, same warm machine: its /tmp/p22 mitigated w4a4 model reused): w4a16 90 x 2 over more seeds
# and with a smaller SignSGD step, w4a4+kv4 60 x 2 with lr 0.01 over seeds 2-4. WAVE2 was left empty, so C22's own
# WAVE2 ran again: the same numbers to the digit as in C22 (the learned step is deterministic for a seed).
export R=/tmp/res24 WAVE2=""
export FIRST="a4:60:2:rtn:2:0.01"
export WAVE1="a4:60:2:rtn:3:0.01 a4:60:2:rtn:4:0.01 a16:90:2:rtn:3 a16:90:2:rtn:4 a16:90:2:rtn:0:0.0075 a16:90:2:rtn:1:0.0075 a16:90:2:rtn:2:0.0075"
PROBE_S=330 bash scripts/h200_session22/callC22.sh
