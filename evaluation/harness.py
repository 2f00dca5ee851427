"""lm-eval integration: accuracy of an in-memory model (float, fake-quantized or real-kernel) on local tasks.

lm-eval's built-in piqa / arc_easy / wikitext read from the Hugging Face hub, which is not always reachable.
The local tasks here use the same prompts and metrics as lm-eval's own YAMLs, over the files in
`shared/data`. `write_tasks(dir)` converts those files into one folder of task YAMLs plus jsonl data with
absolute paths, so the same folder also works with lm-eval's own CLI:

    lm_eval --model hf --model_args pretrained=DIR,dtype=float32 --device cpu \\
        --include_path TASK_DIR --tasks piqa_local,arc_easy_local --limit 50

`evaluate(model, tokenizer, tasks)` runs lm-eval's HFLM on a model object and returns lm-eval's results dict
untouched plus a `sysq` section (recipe, plan, bits, outlier summary, settings).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path

import yaml

from sysq.errors import DataNotFound, SysqError
from sysq.io import atomic_write_text

log = logging.getLogger(__name__)

LOCAL_TASKS = ("piqa_local", "arc_easy_local", "wikitext2_local")
DEFAULT_TASKS = ("piqa_local", "arc_easy_local")
ROLLING_MAX_LENGTH = 2048

# Source files under the data root (see shared/data/README.md).
_SOURCES = {
    "piqa_local": ("piqa/dev.jsonl", "piqa/dev-labels.lst"),
    "arc_easy_local": ("arc_easy/ARC-Easy-Test.genmc.jsonl",),
    "wikitext2_local": ("wikitext-2-raw/wiki.test.raw",),
}

_MC_METRICS = [
    {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
    {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
]


def data_root() -> Path:
    """The shared data folder: the first of sysq.data's roots that holds the task files."""
    from sysq.data import data_roots

    roots = data_roots()
    for root in roots:
        if all((root / f).is_file() for files in _SOURCES.values() for f in files):
            return root
    raise DataNotFound(
        f"evaluation data not found under {', '.join(map(str, roots))}; set SYSQ_DATA to the folder that holds "
        "piqa/dev.jsonl, piqa/dev-labels.lst, arc_easy/ARC-Easy-Test.genmc.jsonl and wikitext-2-raw/wiki.test.raw"
    )


# --- converting the shared files into lm-eval-readable jsonl (one dict per document) ---------------------


def _piqa_docs(root: Path) -> list[dict]:
    items = [json.loads(line) for line in (root / "piqa/dev.jsonl").read_text().splitlines() if line.strip()]
    labels = [int(x) for x in (root / "piqa/dev-labels.lst").read_text().split()]
    if len(items) != len(labels):
        raise SysqError(f"piqa: {len(items)} questions but {len(labels)} labels; the data folder is damaged")
    return [{"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": y} for d, y in zip(items, labels)]


def _arc_docs(root: Path) -> list[dict]:
    docs = []
    for line in (root / "arc_easy/ARC-Easy-Test.genmc.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        d = json.loads(line)
        choices = d["question"]["choices"]
        labels = [c["label"] for c in choices]
        if d["answerKey"] not in labels:
            raise SysqError(f"arc_easy: item {d['id']} answer {d['answerKey']!r} is not among labels {labels}")
        # Same fields as allenai/ai2_arc, so lm-eval's own arc_easy templates apply unchanged.
        docs.append({
            "id": d["id"],
            "question": d["question"]["stem"],
            "choices": {"text": [c["text"] for c in choices], "label": labels},
            "answerKey": d["answerKey"],
        })
    return docs


def _wikitext_docs(root: Path) -> list[dict]:
    """One document per article, as in EleutherAI/wikitext_document_level (a top-level ' = Title = ' starts one)."""
    text = (root / "wikitext-2-raw/wiki.test.raw").read_text(encoding="utf-8").replace("\r\n", "\n")
    pages, current = [], []
    for line in text.splitlines(keepends=True):
        if re.match(r"^ = [^=].* = \n$", line) and current:
            pages.append("".join(current))
            current = []
        current.append(line)
    if current:
        pages.append("".join(current))
    return [{"page": p} for p in pages]


_DOCS = {"piqa_local": _piqa_docs, "arc_easy_local": _arc_docs, "wikitext2_local": _wikitext_docs}


def _task_config(name: str, data_file: Path) -> dict:
    """lm-eval task config for a local task: the upstream prompts, a json dataset with an absolute path."""
    split = {"piqa_local": "validation", "arc_easy_local": "test", "wikitext2_local": "test"}[name]
    cfg = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {split: str(data_file.resolve())}},
        "output_type": "multiple_choice",
        f"{split}_split": split,
        "metadata": {"version": 1.0, "source": [str(data_root() / s) for s in _SOURCES[name]]},
    }
    if name == "piqa_local":  # lm_eval/tasks/piqa/piqa.yaml
        cfg.update({
            "doc_to_text": "Question: {{goal}}\nAnswer:",
            "doc_to_target": "label",
            "doc_to_choice": "{{[sol1, sol2]}}",
            "metric_list": _MC_METRICS,
        })
    elif name == "arc_easy_local":  # lm_eval/tasks/arc/arc_easy.yaml; labels mapped by position
        cfg.update({
            "doc_to_text": "Question: {{question}}\nAnswer:",
            "doc_to_target": "{{choices.label.index(answerKey)}}",
            "doc_to_choice": "{{choices.text}}",
            "metric_list": _MC_METRICS,
        })
    else:  # lm_eval/tasks/wikitext/wikitext.yaml, minus the detokenizer: this file is raw text already
        cfg.update({
            "output_type": "loglikelihood_rolling",
            "doc_to_text": "",
            "doc_to_target": "{{page}}",
            "metric_list": [{"metric": "word_perplexity"}, {"metric": "byte_perplexity"}, {"metric": "bits_per_byte"}],
        })
    return cfg


def write_tasks(directory: str | os.PathLike, tasks=LOCAL_TASKS, overwrite: bool = True) -> Path:
    """Write task YAMLs and their jsonl data into `directory`; pass it to lm-eval as --include_path.
    overwrite=False keeps tasks already written there (the grid reuses one folder for every row)."""
    out = Path(directory).resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = data_root()
    for name in tasks:
        if name not in _DOCS:
            raise SysqError(f"unknown local task {name!r}; local tasks are {', '.join(LOCAL_TASKS)}")
        if not overwrite and (out / f"{name}.yaml").is_file() and (out / f"{name}.jsonl").is_file():
            continue
        docs = _DOCS[name](root)
        data_file = out / f"{name}.jsonl"
        atomic_write_text(data_file, "".join(json.dumps(d) + "\n" for d in docs))
        atomic_write_text(out / f"{name}.yaml", yaml.safe_dump(_task_config(name, data_file), sort_keys=False))
        log.info("wrote task %s (%d docs) to %s", name, len(docs), out)
    return out


def task_manager(tasks, task_dir: str | os.PathLike):
    """A TaskManager that knows the local tasks (written to task_dir); lm-eval's built-in index is loaded
    only for other names, which pass straight through to lm-eval (they need the hub)."""
    from lm_eval.tasks import TaskManager

    local = [t for t in tasks if t in LOCAL_TASKS]
    other = [t for t in tasks if t not in LOCAL_TASKS]
    write_tasks(task_dir, local, overwrite=False)
    # The built-in index costs ~7 s and reads hub datasets: only when a non-local task asks for it.
    tm = TaskManager(include_path=str(task_dir), include_defaults=bool(other))
    if other:
        from lm_eval.tasks import get_task_dict

        unknown = [t for t in other if t not in tm.all_tasks]
        if unknown:
            raise SysqError(f"unknown task(s) {unknown}; local tasks are {', '.join(LOCAL_TASKS)}, other names come "
                            "from lm-eval's index (`lm_eval ls tasks`)")
        try:  # lm-eval's own tasks download their data from the hub: fail here with the fix, not mid-run
            get_task_dict(other, tm)
        except Exception as e:
            raise SysqError(f"lm-eval task(s) {other} could not load their data ({type(e).__name__}: {e}); the hub "
                            f"may be unreachable: use the local tasks ({', '.join(LOCAL_TASKS)})") from e
    return tm


def default_bos(tokenizer) -> bool:
    """Prepend BOS when the tokenizer has one, as the perplexity protocol does (DESIGN.md §3)."""
    return getattr(tokenizer, "bos_token_id", None) is not None


def _bos_tokenizer(tokenizer, bos: bool):
    """A tokenizer whose encode() starts with BOS when `bos` (HFLM's add_bos_token only sets add_special_tokens,
    which many tokenizers, SmolLM2's among them, answer without a BOS). The caller's tokenizer is not changed."""
    tok = copy.deepcopy(tokenizer)
    if tok.pad_token is None:  # HFLM pads batches
        tok.pad_token = tok.eos_token
    if not bos:
        return tok
    if tok.bos_token_id is None:
        raise SysqError("bos=True but the tokenizer has no BOS token; pass bos=False (--no-bos)")
    if tok.encode("a")[:1] != [tok.bos_token_id]:
        tok.add_bos_token = True
        if tok.encode("a")[:1] != [tok.bos_token_id]:
            raise SysqError(f"could not make {type(tok).__name__} prepend BOS; pass bos=False (--no-bos)")
    return tok


def make_lm(model, tokenizer, batch_size: int = 4, bos: bool | None = None, max_length: int | None = None):
    """lm-eval's HFLM around a model object (no reload, no device move: quantized modules stay as they are)."""
    from lm_eval.models.huggingface import HFLM

    if batch_size > 4 and model.device.type == "cpu":
        log.warning("batch_size %d > 4: rolling loglikelihood can take >10 GB of RAM on CPU", batch_size)
    bos = default_bos(tokenizer) if bos is None else bos
    return HFLM(pretrained=model, tokenizer=_bos_tokenizer(tokenizer, bos), batch_size=batch_size,
                add_bos_token=bos, max_length=max_length)


def register_sysq_model():
    """`--model sysq` for lm-eval's own CLI: loads any sysq spec (alias, float folder, sysq-quantized folder,
    .gguf) through sysq.load, then runs as HFLM on that object. See evaluation/lm_eval_main.py."""
    from lm_eval.api.registry import register_model
    from lm_eval.models.huggingface import HFLM

    class SysqLM(HFLM):
        def __init__(self, pretrained: str = "smollm2-135m", dtype: str = "float32", device: str | None = "cpu",
                     batch_size=1, add_bos_token: bool | None = None, max_length: int | None = None, **kwargs):
            from sysq.models import load

            acc = _data_parallel()
            model, tok = load(str(pretrained), dtype=dtype, device=str(acc.device) if acc else device)
            bos = default_bos(tok) if add_bos_token is None else bool(add_bos_token)
            super().__init__(pretrained=model, tokenizer=_bos_tokenizer(tok, bos), batch_size=int(batch_size),
                             add_bos_token=bos, max_length=max_length, **kwargs)
            if acc is not None:    # HFLM does not split the requests of a model object across processes itself
                self.accelerator, self._device = acc, acc.device
                self._rank, self._world_size = acc.local_process_index, acc.num_processes

    try:
        register_model("sysq")(SysqLM)
    except (AssertionError, ValueError):  # already registered (module imported twice)
        pass


def _data_parallel():
    """The Accelerator of a multi-process launch (`accelerate launch`, torchrun), else None: each process then loads
    the model on its own device and evaluates its share of the requests (lm-eval's data parallelism)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from datetime import timedelta

    from accelerate import Accelerator, InitProcessGroupKwargs
    return Accelerator(kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(weeks=52))])


def evaluate(model, tokenizer, tasks=DEFAULT_TASKS, limit: int | float | None = None, batch_size: int = 4,
             num_fewshot: int | None = None, bos: bool | None = None, max_length: int | None = None,
             sysq_info: dict | None = None, task_dir: str | os.PathLike | None = None, log_samples: bool = False,
             quiet: bool = False, **lm_eval_kwargs) -> dict:
    """Run lm-eval tasks on an in-memory model. Returns lm-eval's results dict plus a `sysq` section."""
    import torch
    from lm_eval import simple_evaluate

    tasks = _task_list(tasks)
    bos = default_bos(tokenizer) if bos is None else bos
    if max_length is None and "wikitext2_local" in tasks:
        # Rolling windows at the model's full context (8192 for SmolLM2) need GBs of logits per batch on CPU;
        # 2048 is the perplexity protocol's window (DESIGN.md §3).
        max_length = min(ROLLING_MAX_LENGTH, getattr(model.config, "max_position_embeddings", ROLLING_MAX_LENGTH))
    lm = make_lm(model, tokenizer, batch_size=batch_size, bos=bos, max_length=max_length)
    if quiet:   # datasets' bars; lm-eval's own request bars pass disable=False explicitly and stay
        import datasets
        datasets.disable_progress_bars()
    t0 = time.perf_counter()
    # no_grad, not inference_mode: optimum-quanto 4-bit kernels fail under inference_mode (DESIGN.md §5).
    with (contextlib.nullcontext(task_dir) if task_dir else tempfile.TemporaryDirectory(prefix="sysq-tasks-")) as d, \
            torch.no_grad():
        results = simple_evaluate(model=lm, tasks=tasks, limit=limit, num_fewshot=num_fewshot, task_manager=task_manager(tasks, d),
                                  log_samples=log_samples, verbosity="ERROR" if quiet else None,
                                  **lm_eval_kwargs)
    if results is None:  # non-zero rank in a distributed run
        return {}
    results["sysq"] = {
        **(sysq_info or {}),
        "tasks": tasks,
        "limit": limit,
        "batch_size": batch_size,
        "bos": bos,
        "num_fewshot": num_fewshot,
        "max_length": max_length,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return results


def _task_list(tasks) -> list[str]:
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",")]
    tasks = [t for t in tasks if t]
    if not tasks:
        raise SysqError("no tasks given; pass e.g. --tasks piqa_local,arc_easy_local")
    return list(tasks)


def summarize(results: dict) -> dict[str, dict]:
    """Per task: acc, acc_norm (with stderr), perplexities where present, and n (documents scored)."""
    out = {}
    for task, metrics in results.get("results", {}).items():
        row = {}
        for key, value in metrics.items():
            if "," not in key or not isinstance(value, (int, float)):
                continue
            name = key.split(",")[0]
            row[name] = None if value == "N/A" else float(value)
        n = results.get("n-samples", {}).get(task, {}).get("effective")
        if n is not None:
            row["n"] = int(n)
        out[task] = row
    return out


def save_results(results: dict, out_dir: str | os.PathLike, name: str = "results") -> Path:
    """Write `<name>.json` (lm-eval's dict, sysq section included) and `<name>.md` (lm-eval's table)."""
    from lm_eval.utils import handle_non_serializable, make_table

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    atomic_write_text(path, json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False))
    atomic_write_text(out / f"{name}.md", make_table(results) + "\n")
    return path
