"""lm-eval's own command line, with `--model sysq` added so it reads what `sysq.load` reads (sysq-quantized
folders, GGUF files, aliases) and with sysq's BOS convention:

    python -m evaluation.lm_eval_main --model sysq --model_args pretrained=out/q8,dtype=float32 \\
        --include_path TASK_DIR --tasks piqa_local,arc_easy_local --limit 50 --batch_size 4

Plain float folders need nothing from sysq: `lm_eval --model hf --model_args pretrained=DIR,add_bos_token=True`.
TASK_DIR comes from `sysq eval --write-tasks TASK_DIR`.
"""
from lm_eval.__main__ import cli_evaluate

from evaluation import harness

if __name__ == "__main__":
    harness.register_sysq_model()   # here, not at import: every `sysq` command would pay for lm-eval's import
    cli_evaluate()
