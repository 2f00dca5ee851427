"""The main job (`sysq run`, what `make demo` runs): detect -> quantize -> mitigate -> before/after.

On one model and one evaluation set, in one process:
  1. full-precision perplexity;
  2. detect the systematic outliers on calibration windows (summary printed, report written);
  3. the naive recipe (default w8a8-static) with no mitigation, and its perplexity;
  4. the `auto` mitigation plan for that recipe, and its perplexity;
  5. a short PIQA / ARC-Easy accuracy check at a small limit;
  6. one before/after table, printed and written to OUT/report.md with the detect plots.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sysq.io import atomic_write_text

from .perplexity import perplexity

log = logging.getLogger(__name__)


@dataclass
class RunSettings:
    model: str = "smollm2-135m"
    dtype: str = "float32"
    data: str = "wikitext2"
    seqlen: int = 512
    limit: int = 40                  # evaluation windows (first N)
    calib: str = "wikitext2-valid"
    calib_n: int = 8
    calib_seqlen: int = 512
    seed: int = 0
    recipe: str = "w8a8-static"
    tasks: str = "piqa_local,arc_easy_local"
    task_limit: int = 20             # items per task; 0 skips the accuracy check
    bos: bool = True
    out: str = "out"
    quiet: bool = False


@dataclass
class Row:
    config: str
    ppl: float
    ratio: float
    acc: dict = field(default_factory=dict)   # task -> (acc, acc_norm)
    seconds: float = 0.0


def run(s: RunSettings) -> dict:
    import sysq
    from sysq import data
    from sysq.detect import detect
    from sysq.mitigate.api import mitigate, plan

    t_start = time.perf_counter()
    out = Path(s.out)
    print(f"sysq run  model={s.model} dtype={s.dtype}  eval={s.data} seqlen={s.seqlen} windows={s.limit or 'all'}  "
          f"calib={s.calib} n={s.calib_n}x{s.calib_seqlen} seed={s.seed}  recipe={s.recipe}  "
          f"tasks={s.tasks} limit={s.task_limit}")
    model, tok = sysq.load(s.model, dtype=s.dtype)
    test = data.windows(s.data, tok, n=s.limit or None, seqlen=s.seqlen, bos=s.bos)
    calib = data.windows(s.calib, tok, n=s.calib_n, seqlen=s.calib_seqlen, seed=s.seed, bos=s.bos)
    rows: list[Row] = []

    def evaluate(name: str, m, recipe=None) -> Row:
        t0 = time.perf_counter()
        res = perplexity(m, test, quiet=s.quiet, model_name=s.model, recipe=recipe)
        fp = rows[0].ppl if rows else res.ppl
        row = Row(name, res.ppl, res.ppl / fp, _accuracy(m, tok, s), time.perf_counter() - t0)
        rows.append(row)
        print(f"[{name}] perplexity {res.ppl:.3f} (x{row.ratio:.3f} FP)  {_acc_text(row.acc)}  {row.seconds:.0f}s")
        return row

    print("\n== 1. full precision")
    evaluate("FP", model)

    print("\n== 2. detect")
    report = detect(model, calib, tokenizer=tok, quiet=s.quiet)
    report.save(out / "detect")
    print(report.headline())

    print(f"\n== 3. {s.recipe}, no mitigation")
    naive = copy.deepcopy(model)
    sysq.quantize(naive, s.recipe, calib, quiet=s.quiet)
    evaluate(f"{s.recipe} none", naive, s.recipe)
    del naive

    print(f"\n== 4. {s.recipe}, auto plan from the report")
    auto = model  # the FP model is no longer needed
    p = plan(report, s.recipe, "auto")
    sysq.quantize(auto, mitigate(auto, p, calib, quiet=s.quiet, report=report), calib, quiet=s.quiet)
    print(p)
    evaluate(f"{s.recipe} auto", auto, s.recipe)
    p.save(out / "plan.yaml")

    table = _table(rows, s)
    print("\n== 5. before / after\n" + table)
    seconds = time.perf_counter() - t_start
    result = {"settings": asdict(s), "rows": [asdict(r) for r in rows], "seconds": seconds}
    atomic_write_text(out / "report.md", _markdown(table, report, s, seconds))
    import json
    atomic_write_text(out / "run.json", json.dumps(result, indent=2))
    print(f"\nwrote {out / 'report.md'}, {out / 'run.json'}, {out / 'detect'}  ({seconds:.0f}s in all)")
    return result


def _accuracy(model, tok, s: RunSettings) -> dict:
    if not s.task_limit:
        return {}
    from .harness import evaluate, summarize
    res = evaluate(model, tok, tasks=s.tasks, limit=s.task_limit, batch_size=4, quiet=True)
    return {task: (v.get("acc"), v.get("acc_norm")) for task, v in summarize(res).items()}


def _acc_text(acc: dict) -> str:
    return "  ".join(f"{t} acc {a:.3f} acc_norm {n:.3f}" for t, (a, n) in acc.items() if a is not None)


def _table(rows: list[Row], s: RunSettings) -> str:
    tasks = list(rows[0].acc) if rows and rows[0].acc else []
    head = ["configuration", f"ppl ({s.data}, {s.seqlen}x{s.limit or 'all'})", "x FP"]
    head += [f"{t} acc_norm (n={s.task_limit})" for t in tasks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.config, f"{r.ppl:.3f}", f"{r.ratio:.3f}"] + [f"{r.acc[t][1]:.3f}" for t in tasks]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _markdown(table: str, report, s: RunSettings, seconds: float) -> str:
    plots = sorted((Path(s.out) / "detect" / "plots").glob("*.png"))
    return "\n".join([
        f"# sysq run: {s.model}",
        "",
        f"Settings: eval {s.data}, seqlen {s.seqlen}, first {s.limit or 'all'} windows, BOS {s.bos}; calibration "
        f"{s.calib} {s.calib_n}x{s.calib_seqlen} seed {s.seed}; recipe {s.recipe}; tasks {s.tasks} limit "
        f"{s.task_limit}; {seconds:.0f}s in all.",
        "",
        "## Before / after",
        "",
        table,
        "",
        "## Systematic outliers (detect)",
        "",
        report.headline(),
        "",
        "Full report: [detect/report.md](detect/report.md). Mitigation plan: [plan.yaml](plan.yaml).",
        "",
        *[f"![{p.stem}](detect/plots/{p.name})" for p in plots],
        "",
    ])
