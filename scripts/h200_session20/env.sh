# sourced at the start of every call of the twentieth session: the thirteenth session's env (wheels .gpu/whl1 and
# .gpu/whl2p, data .gpu/data, the default model's GGUF in pieces .gpu/a, .gpu/b, .gpu/c carried by three calls on one
# warm machine). A fresh checkout has no .gpu/: scripts/h200_session8/make_whl1.sh, scripts/h200_session13/make_whl2p.sh,
# then the data and the pieces as in scripts/h200_session12/callT12.sh's header.
source scripts/h200_session13/env.sh
# after a call's probes: wait for them, print their PROBE lines and the tail of any log without one, pack the folder
collect_probes() {   # results folder
  wait
  grep -h PROBE $1/*.log | sort
  for f in $1/*.log; do grep -q PROBE $f || { echo "=== $f"; tail -c 600 $f; }; done
  tar czf $OUT/$(basename $1).tgz -C $(dirname $1) $(basename $1)
}
