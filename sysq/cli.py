"""The `sysq` command line: detect | explain | quantize | eval | ppl | run | bench.

Exit codes: 0 success, 1 an unexpected error (a bug: please report it), 2 bad input or usage (a missing
model or data file, an unknown recipe field, an unsupported architecture, NaN in activations): the
message says what to fix.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

EXIT_OK, EXIT_BUG, EXIT_BAD_INPUT = 0, 1, 2

log = logging.getLogger("sysq")


def _add_model(p, default="smollm2-135m"):
    p.add_argument("--model", default=default,
                   help="alias (smollm2-135m), HF or sysq folder, .gguf file, or hub id (default: %(default)s)")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 (default: %(default)s)")


def _add_eval_windows(p, seqlen=512, limit=40):
    p.add_argument("--data", default="wikitext2", help="named set or text/jsonl path (default: %(default)s)")
    p.add_argument("--seqlen", type=int, default=seqlen, help="tokens per window, BOS excluded (default: "
                   + ("%(default)s)" if seqlen else "2048; encoders: their longest window, at most 510)"))
    p.add_argument("--limit", type=int, default=limit, help="first N windows; 0 = all (default: %(default)s)")
    p.add_argument("--no-bos", action="store_true", help="do not prepend the model's BOS to each window")


def _add_sample_windows(p, n: int):
    """Seeded windows of calibration text (detect, explain)."""
    p.add_argument("--data", default="wikitext2-valid", help="named set or text/jsonl path (default: %(default)s)")
    p.add_argument("--n", type=int, default=n, help="windows (default: %(default)s)")
    p.add_argument("--seqlen", type=int, default=512, help="tokens per window, BOS excluded (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="window sampling seed (default: %(default)s)")
    p.add_argument("--no-bos", action="store_true", help="do not prepend the model's BOS to each window")


def write_json(path, obj) -> None:
    from .io import atomic_write_text
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


# ---- subcommands -------------------------------------------------------------------------------------
def cmd_ppl(args) -> int:
    """Perplexity of a decoder; masked-token perplexity of an encoder (evaluation/masked.py, protocol printed)."""
    from evaluation.perplexity import perplexity

    from . import data, models
    from .arch import get_adapter

    model, tok = models.load(args.model, dtype=args.dtype, device=args.device)
    ad = get_adapter(model)
    seqlen = args.seqlen or (2048 if ad.causal else min(510, (ad.max_length or 512) - 2))
    bos = not args.no_bos or not ad.causal           # an encoder's windows always start with [CLS]
    w = data.windows(args.data, tok, n=args.limit or None, seqlen=seqlen, bos=bos)
    if ad.causal:
        res = perplexity(model, w, batch_size=args.batch_size, quiet=args.quiet, model_name=args.model)
    else:
        from evaluation.masked import masked_perplexity
        res = masked_perplexity(model, w, tok, seed=args.mask_seed, batch_size=args.batch_size or 4,
                                quiet=args.quiet, model_name=args.model)
    print(res)
    if args.json:
        write_json(args.json, res.to_dict())
    return EXIT_OK


def cmd_run(args) -> int:
    """The main job on the default model and data: detect -> quantize -> mitigate -> before/after."""
    from evaluation.run import RunSettings, run

    run(RunSettings(model=args.model, dtype=args.dtype, data=args.data, seqlen=args.seqlen, limit=args.limit,
                    calib_n=args.calib_n, seed=args.seed, recipe=args.recipe, tasks=args.tasks,
                    task_limit=args.task_limit, bos=not args.no_bos, out=args.out, quiet=args.quiet))
    return EXIT_OK


def cmd_detect(args) -> int:
    """Systematic outliers of a model on calibration windows: report.json, report.md, plots."""
    from . import data, models
    from .detect import detect, parse_thresholds

    th = parse_thresholds(args.threshold)
    if args.mitigate and args.fast:
        from .mitigate.api import fast_method
        args.mitigate = fast_method(args.mitigate)
    if args.mitigate and not _is_plan_file(args.mitigate):
        from .mitigate.api import plan
        plan(None, args.recipe, args.mitigate)        # a bad method or recipe fails before any work
    model, tok = models.load(args.model, dtype=args.dtype, device=args.device)
    w = data.windows(args.data, tok, n=args.n, seqlen=args.seqlen, seed=args.seed, bos=not args.no_bos)
    kw = dict(thresholds=th, batch_size=args.batch_size, attention=not args.no_attention,
              attention_windows=args.attention_windows or None)
    report = detect(model, w, tokenizer=tok, quiet=args.quiet, **kw)
    report.model["name"] = args.model
    after = plan_ = None
    if args.mitigate:
        after, plan_ = _detect_after(args, model, tok, report, w, kw)
    out = report.save(args.out, plots=not args.no_plots)
    print(report.headline())
    written = ["report.json", "report.md"] + ([] if args.no_plots else ["plots/"])
    if after is not None:
        after.save(f"{args.out}/after", plots=not args.no_plots)
        plan_.save(f"{args.out}/plan.yaml")
        b, a = report.mitigation["summary"]["before"], report.mitigation["summary"]["after"]
        print(f"after plan {plan_.method!r} ({plan_.recipe}): residual max {b['resid_max']:.1f} -> {a['resid_max']:.1f}; "
              f"largest static scale {b['largest']:.4g} ({b['largest_linear']}) -> {a['largest']:.4g} "
              f"({a['largest_linear']}); median {b['median']:.4g} -> {a['median']:.4g}")
        print(after.headline())
        written += ["after/", "plan.yaml"]
    print(f"wrote {out}/: " + ", ".join(written))
    return EXIT_OK


def _is_plan_file(spec: str) -> bool:
    from pathlib import Path
    return Path(spec).suffix in (".yaml", ".yml") or Path(spec).is_file()


def _detect_after(args, model, tok, report, windows, detect_kw):
    """`sysq detect --mitigate PLAN`: mitigate the model with the plan (a method like auto, or a plan YAML),
    detect again on the same windows; the first --calib-n windows feed the plan's searches."""
    from .mitigate.api import plan
    from .mitigate.compare import before_after
    from .mitigate.plan import MitigationPlan

    if _is_plan_file(args.mitigate):
        p = MitigationPlan.load(args.mitigate)
    else:
        p = plan(report, args.recipe, args.mitigate)
    calib = windows.ids[: args.calib_n]
    after, _ = before_after(model, report, p, windows, calib, tokenizer=tok, quiet=args.quiet, **detect_kw)
    return after, p


def cmd_explain(args) -> int:
    """Interventions that test the paper's causal claims, chosen from the detect report, each with a control."""
    from . import data, models
    from .detect import OutlierReport, detect
    from .explain import explain

    report = OutlierReport.load(args.report) if args.report else None
    model, tok = models.load(args.model, dtype=args.dtype, device=args.device)
    w = data.windows(args.data, tok, n=args.n, seqlen=args.seqlen, seed=args.seed, bos=not args.no_bos)
    if report is None:
        report = detect(model, w, tokenizer=tok, quiet=args.quiet)
        report.model["name"] = args.model
    ex = explain(model, w, report, mode=args.mode, seed=args.control_seed, batch_size=args.batch_size,
                 quiet=args.quiet)
    ex.model["name"] = args.model
    out = ex.save(args.out, plots=not args.no_plots)
    print("\n".join(ex.headline))
    print(f"wrote {out}/: report.json, report.md" + ("" if args.no_plots else ", plots/"))
    return EXIT_OK


def cmd_quantize(args) -> int:
    from .commands import quantize
    return quantize.run(args)


def cmd_eval(args) -> int:
    from evaluation import command
    return command.run_eval(args)


def cmd_bench(args) -> int:
    from evaluation import bench
    return bench.run(bench.finish(args, args._bench_argv))


def _with_parents(add_parser, common):
    def add(name, **kw):
        return add_parser(name, parents=[common], **kw)
    return add


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sysq", description=__doc__.split("\n")[0],
                                     epilog="Exit codes: 0 ok, 1 unexpected error, 2 bad input (message says the fix).")
    parser.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    parser.add_argument("--verbose", action="store_true", help="debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # The same flags after the subcommand too (`sysq ppl --quiet`); SUPPRESS keeps the top-level value.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logs")
    sub.add_parser = _with_parents(sub.add_parser, common)

    p = sub.add_parser("ppl", help="perplexity of a model on WikiText-2 (DESIGN.md section 3); encoders: masked-token "
                                   "perplexity (evaluation/masked.py)")
    _add_model(p)
    _add_eval_windows(p, seqlen=None, limit=0)
    p.add_argument("--mask-seed", type=int, default=0, help="encoders: seed of the masked positions (default: 0)")
    p.add_argument("--batch-size", type=int, default=None, help="windows per forward pass (default: 2048 // seqlen)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: where the model loads, the CPU)")
    p.add_argument("--json", help="also write the result with its settings to this file")
    p.set_defaults(func=cmd_ppl)

    p = sub.add_parser("detect", help="find systematic outliers (activation, weight, attention), their lifecycle")
    _add_model(p)
    _add_sample_windows(p, n=32)
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default: %(default)s)")
    p.add_argument("--threshold", action="append", default=[], metavar="NAME=VALUE",
                   help="override a threshold, e.g. massive_abs=50 (repeatable; names in report.md)")
    p.add_argument("--no-attention", action="store_true", help="skip attention statistics (keeps the fast kernel)")
    p.add_argument("--attention-windows", type=int, default=8,
                   help="windows (the first ones) run with eager attention for attention statistics; 0 = all "
                        "(default: %(default)s)")
    p.add_argument("--no-plots", action="store_true", help="write report.json and report.md only")
    p.add_argument("--mitigate", metavar="PLAN", default=None,
                   help="also apply a mitigation plan (auto, smooth+preserve-tokens, ... or a plan YAML), detect "
                        "again and add a before/after panel to the report (after-report in OUT/after)")
    p.add_argument("--recipe", default="w8a8-static", help="recipe the plan targets (default: %(default)s)")
    p.add_argument("--fast", action="store_true", help="with --mitigate auto: the rules (auto-fast), no measured search")
    p.add_argument("--calib-n", type=int, default=8,
                   help="with --mitigate: the first N windows feed the plan's searches (default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: where the model loads, the CPU)")
    p.add_argument("--out", default="out/detect", help="output folder (default: %(default)s)")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("explain", help="test the paper's causal claims by intervention (ablate, clamp, mask keys, "
                                       "anchor bias), each against a control")
    _add_model(p)
    _add_sample_windows(p, n=8)
    p.add_argument("--report", default=None,
                   help="a detect report (folder or report.json) of this model; default: detect on the same windows")
    p.add_argument("--mode", default="zero", choices=("zero", "shrink"),
                   help="how down_proj columns are ablated (default: %(default)s)")
    p.add_argument("--control-seed", type=int, default=0, help="seed of the random controls (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=2, help="windows per forward pass (default: %(default)s)")
    p.add_argument("--no-plots", action="store_true", help="write report.json and report.md only")
    p.add_argument("--device", default=None, help="cpu | cuda (default: where the model loads, the CPU)")
    p.add_argument("--out", default="out/explain", help="output folder (default: %(default)s)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("quantize", help="detect -> plan -> mitigate -> quantize (or --mitigate none); perplexity "
                                        "before/after; save as sysq or compressed-tensors")
    from .commands.quantize import add_arguments as _quantize_arguments
    _quantize_arguments(p)
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("eval", help="lm-eval accuracy (local PIQA / ARC-Easy / WikiText-2 tasks) of a model or folder")
    from evaluation.command import add_eval_arguments
    add_eval_arguments(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("run", help="the main job: detect -> quantize -> mitigate -> before/after on the default")
    _add_model(p)
    _add_eval_windows(p, seqlen=512, limit=40)
    p.add_argument("--recipe", default="w8a8-static", help="recipe to quantize with (default: %(default)s)")
    p.add_argument("--calib-n", type=int, default=8, help="calibration windows from wikitext2-valid (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="calibration sample seed (default: %(default)s)")
    p.add_argument("--tasks", default="piqa_local,arc_easy_local", help="lm-eval tasks (default: %(default)s)")
    p.add_argument("--task-limit", type=int, default=20, help="items per task; 0 skips accuracy (default: %(default)s)")
    p.add_argument("--out", default="out", help="output folder (default: %(default)s)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("bench", help="prefill / decode speed and memory of FP and every real kernel, eager and compiled")
    from evaluation.bench import add_arguments as _bench_arguments
    _bench_arguments(p)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "bench":   # a bench row re-runs itself in a subprocess with the same arguments
        argv = list(sys.argv[1:] if argv is None else argv)
        args._bench_argv = argv[argv.index("bench") + 1:]
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.quiet:
        # tqdm bars created without an explicit `disable` read TQDM_DISABLE (lm-eval's request bars do not)
        os.environ["TQDM_DISABLE"] = "1"
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
    from .errors import SysqError
    try:
        return args.func(args)
    except SysqError as e:
        print(f"sysq {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
