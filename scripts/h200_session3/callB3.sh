# call B3: the GGUF's last piece completes the default model. Accuracy jobs side by side on one H200:
# lm-eval batch 1 on one GPU (the data-parallel twin ran in call A3), and the INT4 rows that failed in A3 (fixed in
# 6289aa0), one process beside it so that the batch-1 run fits the call.
source scripts/h200_session/env.sh
R=/tmp/res; mkdir -p $R
export OMP_NUM_THREADS=4
python3 -c "import sysq; m, t = sysq.load('smollm2-135m'); print('smollm2 ok', sum(p.numel() for p in m.parameters()))" || exit 1
( python3 -m sysq.cli --quiet quantize --model smollm2-135m --recipe w8a8 --mitigate none --ppl-windows 0 --out /tmp/q8 > $R/lmeval-quantize.log 2>&1 && \
  python3 -m sysq.cli --quiet eval --write-tasks /tmp/tasks >> $R/lmeval-quantize.log 2>&1 && \
  timeout 540 python3 -m evaluation.lm_eval_main --model sysq --model_args pretrained=/tmp/q8,dtype=float32 --include_path /tmp/tasks \
    --tasks piqa_local,arc_easy_local --limit 500 --batch_size 1 --device cuda:0 --output_path $R/lmeval-one-bs1 > $R/lmeval-one-bs1.log 2>&1 ) &
( timeout 550 python3 scripts/int4_table.py --device cuda --quiet --time-limit 260 --configs "fp,w4a16-g64+fz+learned200x8@auto+learned,w4a8+g64+fz@auto+learned,w4a16-g64+fz@auto+learned" --out $R/int4c > $R/int4c.log 2>&1 ) &
wait
tar czf $OUT/callB3.tgz --exclude='*.safetensors' --exclude='*.pt' --exclude='cache' -C /tmp res
grep -h "|" $R/lmeval-one-bs1.log | grep acc
for f in $R/int4c.log; do echo "=== $f"; tail -c 2500 $f; done
