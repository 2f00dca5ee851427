# lm-eval on a folder sysq saved: one GPU, then data-parallel over two (accelerate launch), same folder, same tasks.
# The two results must give the same acc / acc_norm (issue 12). Usage: [BS=1] bash lmeval_dp.sh RESULTS_DIR (BS: lm-eval batch size, default 32)
R=$1; mkdir -p $R
python3 -m sysq.cli --quiet quantize --model smollm2-135m --recipe w8a8 --mitigate none --ppl-windows 0 --out /tmp/q8 > $R/lmeval-quantize.log 2>&1 || exit 1
python3 -m sysq.cli --quiet eval --write-tasks /tmp/tasks >> $R/lmeval-quantize.log 2>&1 || exit 1
A="--model sysq --model_args pretrained=/tmp/q8,dtype=float32 --include_path /tmp/tasks --tasks piqa_local,arc_easy_local --limit 500 --batch_size ${BS:-32}"
CUDA_VISIBLE_DEVICES=0 timeout 240 python3 -m evaluation.lm_eval_main $A --device cuda:0 --output_path $R/lmeval-one > $R/lmeval-one.log 2>&1
timeout 240 accelerate launch --multi_gpu --num_processes 2 -m evaluation.lm_eval_main $A --output_path $R/lmeval-two > $R/lmeval-two.log 2>&1
grep -h "acc" $R/lmeval-one.log $R/lmeval-two.log | grep "|"
