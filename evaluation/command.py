"""`sysq eval` (lm-eval accuracy of one model) and `python scripts/evaluate.py` (the comparison grid).

    sysq eval --model DIR_OR_SPEC --tasks piqa_local,arc_easy_local --limit 50 --out out/eval
    sysq eval --write-tasks out/tasks        # task YAMLs for lm_eval --include_path out/tasks
    python scripts/evaluate.py --configs fp,w8a8-static,w8a8-static@auto,bnb-int8,quanto-w8a8 --out out/grid
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

from sysq.errors import SysqError

from . import harness

EXIT_OK, EXIT_BAD_INPUT = 0, 2

# lm-eval flags forwarded to simple_evaluate under their own names (both spellings accepted).
_FORWARDED = {
    "num_fewshot": int, "system_instruction": str, "gen_kwargs": str, "bootstrap_iters": int,
    "fewshot_as_multiturn": None, "apply_chat_template": None, "random_seed": int, "predict_only": None,
}


def add_eval_arguments(p) -> None:
    p.add_argument("--model", default="smollm2-135m",
                   help="alias, HF folder, folder saved by `sysq quantize`, .gguf or hub id (default: %(default)s)")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device for the model (default: %(default)s)")
    p.add_argument("--tasks", default=",".join(harness.DEFAULT_TASKS),
                   help=f"comma-separated: local tasks ({', '.join(harness.LOCAL_TASKS)}) or lm-eval task names "
                        "(those need the hub) (default: %(default)s)")
    p.add_argument("--limit", type=float, default=None, help="documents per task (a fraction if < 1); default all")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=4,
                   help="lm-eval batch size; keep <= 4 on CPU (default: %(default)s)")
    p.add_argument("--max-length", "--max_length", dest="max_length", type=int, default=None,
                   help="context length for rolling loglikelihood (default: the model's)")
    p.add_argument("--no-bos", action="store_true", help="do not prepend the model's BOS (default: prepend it)")
    p.add_argument("--report", default=None, help="an outlier report (report.json from `sysq detect`) to summarise "
                                                  "in the results' sysq section")
    p.add_argument("--out", default=None, help="write results.json (lm-eval's dict + a sysq section) and results.md")
    p.add_argument("--write-tasks", metavar="DIR", default=None,
                   help="only write the local task YAMLs (+ data) to DIR, for `lm_eval --include_path DIR`")
    p.add_argument("--lm-eval", action="append", default=[], metavar="KEY=VALUE",
                   help="any other lm_eval.simple_evaluate argument, e.g. --lm-eval cache_requests=True")
    for name, typ in _FORWARDED.items():
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        kw = dict(action="store_true") if typ is None else dict(type=typ)
        p.add_argument(*flags, dest=name, default=None, help="forwarded to lm-eval", **kw)


def _literal(value: str):
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def lm_eval_kwargs(args) -> dict:
    kw = {name: getattr(args, name) for name in _FORWARDED if getattr(args, name, None) is not None}
    for item in args.lm_eval:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SysqError(f"--lm-eval expects KEY=VALUE, got {item!r}")
        kw[key.strip()] = _literal(value.strip())
    return kw


def sysq_info(model, spec: str, report_path: str | None = None) -> dict:
    """The `sysq` section: what model, which recipe and plan it carries, bits, outlier summary."""
    info = {"model": spec, "recipe": "fp", "plan": None, "bits": {"weight": 32, "act": 32}}
    recipe = getattr(model, "_sysq_recipe", None)
    if recipe is not None:
        from .compare import _recipe_bits
        info.update(recipe=recipe.name, description=recipe.describe(), bits=_recipe_bits(recipe))
    plan = getattr(model, "_sysq_plan", None)
    if plan is not None:
        info["plan"] = plan.to_dict() if hasattr(plan, "to_dict") else str(plan)
    if report_path:
        from sysq.detect.report import OutlierReport
        info["outliers"] = OutlierReport.load(report_path).summary
    return info


def run_eval(args) -> int:
    if args.write_tasks:
        path = harness.write_tasks(args.write_tasks)
        print(f"wrote {', '.join(harness.LOCAL_TASKS)} to {path}\n"
              f"  lm_eval --model hf --model_args pretrained=DIR,dtype=float32,add_bos_token=True --device cpu "
              f"--include_path {path} --tasks piqa_local,arc_easy_local --limit 50")
        return EXIT_OK
    from sysq.models import load

    limit = args.limit
    if limit is not None and limit >= 1:
        limit = int(limit)
    kw = lm_eval_kwargs(args)
    model, tok = load(args.model, dtype=args.dtype, device=args.device)
    info = sysq_info(model, args.model, args.report)
    print(f"sysq eval: model={args.model} recipe={info['recipe']} tasks={args.tasks} limit={limit} "
          f"batch_size={args.batch_size} bos={not args.no_bos} dtype={args.dtype} device={args.device}"
          + (f" lm_eval={kw}" if kw else ""))
    res = harness.evaluate(model, tok, args.tasks, limit=limit, batch_size=args.batch_size,
                           bos=False if args.no_bos else None, max_length=args.max_length, sysq_info=info,
                           quiet=getattr(args, "quiet", False), **kw)
    from lm_eval.utils import make_table
    print(make_table(res))
    if args.out:
        path = harness.save_results(res, args.out)
        print(f"wrote {path}")
    return EXIT_OK


# ---- the grid ---------------------------------------------------------------------------------------------------

DEFAULT_CONFIGS = "fp,w8a8,w8a8-static,w8a8-static@auto,w4a16-g128,w4a16-g128@auto,bnb-int8,bnb-nf4,quanto-w8a8,quanto-w4"


def add_grid_arguments(p) -> None:
    p.add_argument("--model", default="smollm2-135m", help="alias, HF folder or hub id (default: %(default)s)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--configs", default=DEFAULT_CONFIGS,
                   help="comma-separated configurations: fp, RECIPE, RECIPE@PLAN, bnb-int8, bnb-nf4, quanto-w8a8, "
                        "quanto-w4, peer rows of evaluation/peers.py such as autoround-w4a16-g64 "
                        "(default: %(default)s)")
    p.add_argument("--data", default="wikitext2", help="perplexity set (default: %(default)s)")
    p.add_argument("--seqlen", type=int, default=512, help="perplexity window (default: %(default)s)")
    p.add_argument("--windows", type=int, default=40, help="first N perplexity windows; 0 = all (default: %(default)s)")
    p.add_argument("--window-offset", type=int, default=0,
                   help="skip this many perplexity windows first: 40 with --windows 40 measures windows 40-79, a "
                        "second set disjoint from the first (default: %(default)s)")
    p.add_argument("--keep-models", action="store_true",
                   help="save each sysq row's quantized model under CACHE/models and reuse it when only the "
                        "evaluation settings change (e.g. another --window-offset); peer checkpoints are always kept, "
                        "under CACHE/peers")
    p.add_argument("--cache", default=None, help="folder for kept models and peer checkpoints (default: OUT), so "
                                                 "two OUT folders (two window sets) share them")
    p.add_argument("--tasks", default=",".join(harness.DEFAULT_TASKS),
                   help="comma-separated lm-eval tasks; empty for perplexity only (default: %(default)s)")
    p.add_argument("--limit", type=int, default=0, help="documents per task; 0 = all (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4, help="lm-eval batch size (default: %(default)s)")
    p.add_argument("--no-bos", action="store_true", help="no BOS before perplexity windows and task prompts")
    p.add_argument("--calib-n", type=int, default=32, help="calibration windows (default: %(default)s)")
    p.add_argument("--calib-seqlen", type=int, default=512, help="calibration window (default: %(default)s)")
    p.add_argument("--calib-seed", type=int, default=0)
    p.add_argument("--detect-n", type=int, default=8,
                   help="calibration windows the `auto` plans' outlier report uses (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device for every row (default: %(default)s)")
    p.add_argument("--out", default="out/grid", help="output folder; rows there are reused (default: %(default)s)")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failing configuration")
    p.add_argument("--quiet", action="store_true", default=False, help="no progress bars")


def run_grid_command(args) -> int:
    from .compare import GridSettings, run_grid

    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    settings = GridSettings(model=args.model, dtype=args.dtype, data=args.data, seqlen=args.seqlen,
                            windows=args.windows or None, window_offset=args.window_offset, bos=not args.no_bos,
                            tasks=tasks,
                            limit=args.limit or None, batch_size=args.batch_size, calib_n=args.calib_n,
                            calib_seqlen=args.calib_seqlen, calib_seed=args.calib_seed, detect_n=args.detect_n,
                            device=args.device)
    print("grid settings: " + json.dumps(settings.to_dict()))
    rows = run_grid(args.configs.split(","), settings, out=args.out, quiet=args.quiet, fail_fast=args.fail_fast,
                    keep_models=args.keep_models, cache=args.cache)
    print((Path(args.out) / "results.md").read_text())
    failed = [r for r in rows if r.status != "ok"]
    for r in failed:
        print(f"configuration {r.config!r} failed: {r.error}")
    print(f"wrote {args.out}/results.json, results.csv, results.md, results.png")
    return EXIT_BAD_INPUT if failed else EXIT_OK
