# run_parts NAME PART_S: issue 15's device tables as parts side by side (calls I5-I7, I13). One int4_table process ($T)
# per entry of the array P ("part-name int4_table-arguments"; only those named in $PARTS when set), each stopped at
# PART_S seconds, then one table with every part whose results are in $R merged (each row against the FP row of its
# own part; $MERGE_ARGS: the merge process's own arguments), the parts' logs' tails, and $OUT/callNAME.tgz.
run_parts() {
  local n=$1 part_s=$2 p k M="" Q=()
  for p in "${P[@]}"; do [ -z "$PARTS" ] || [[ " $PARTS " == *" ${p%% *} "* ]] && Q+=("$p"); done
  for p in "${Q[@]}"; do
    k=${p%% *}
    ( timeout $part_s $T ${p#* } --out $R/$n-$k > $R/$n-$k.log 2>&1 ) &
  done
  wait
  for p in "${P[@]}"; do k=${p%% *}; [ -f $R/$n-$k/w40/results.json ] && M="$M --merge $R/$n-$k"; done
  timeout 60 $T --configs fp $MERGE_ARGS --out $R/$n-all $M > $R/$n.log 2>&1
  tar czf $OUT/call${n^^}.tgz --exclude='*.safetensors' --exclude='*.pt' --exclude='cache' -C $(dirname $R) $(basename $R)
  for f in $R/$n-*.log; do echo "=== $f"; tail -c 300 $f; done
  cat $R/$n-all/table.md
}
