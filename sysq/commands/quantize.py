"""`sysq quantize` and `python scripts/quantize.py`: one implementation, the same arguments.

Quantizing around the outliers is the default: detect -> plan -> mitigate -> quantize (--mitigate auto), or a
method string (smooth+clip, ...), a plan YAML, or none. --report reuses a detect report instead of running
detect. --target engine restricts the plan to what a compressed-tensors export carries (implied by
--format compressed-tensors) and, in the same run, measures the full plan too, so its cost is printed.

Prints the plan (what was rotated, smoothed, clipped, preserved), modules per scheme, bytes, and perplexity
before and after at a quick setting (WikiText-2 raw test, first --ppl-windows windows of --ppl-seqlen tokens).
With --out, the saved folder holds the model, plan.yaml, outliers.md (the report's headline) and quantize.json;
it is reloaded and checked (identical logits for --format sysq; perplexity through plain transformers for
compressed-tensors).
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

from ..errors import SysqError
from ..io import atomic_write_text


def add_arguments(p) -> None:
    p.add_argument("--model", default="smollm2-135m", help="alias, HF or sysq folder, .gguf or hub id (default: %(default)s)")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 (default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: where the model loads, the CPU)")
    p.add_argument("--recipe", default="w8a8-static",
                   help="preset (w8a16, w4a16, w4a16-pc, w8a8, w8a8-static, w4a8, w4a4, w8a8-int, bnb-int8, bnb-nf4,"
                        " ...) with +kv8/+kv4/+gptq/+mse, or a YAML file (default: %(default)s)")
    p.add_argument("--mitigate", default="auto", metavar="PLAN",
                   help="auto (default: candidate plans measured on calibration windows; for INT4 weights learned "
                        "rounding instead of GPTQ, its seconds printed: w4a16 and w4a8 learned alone (w4a16 200 "
                        "steps/layer, under bf16 autocast where the device has native bf16, else in float32 with the attention's "
                        "linears in the first 100; w4a8 100), per-token loss, float zero points, g64; w4a4 after the "
                        "measured plan, 200 steps x 8 windows, "
                        "g32), auto-fast (rules), none, "
                        "a '+'-join of methods (smooth, smoothquant, clip, preserve-tokens, preserve-channels, rotate, "
                        "gptq), or a plan YAML (e.g. an edited plan.yaml)")
    p.add_argument("--fast", action="store_true",
                   help="auto by rules (auto-fast) instead of measuring candidate plans on calibration windows")
    p.add_argument("--report", default=None, metavar="REPORT",
                   help="reuse this outlier report (report.json or its folder from `sysq detect`) instead of detecting")
    p.add_argument("--target", default=None, choices=("sysq", "engine"),
                   help="sysq: anything sysq simulates; engine: only what compressed-tensors carries (vLLM, plain "
                        "transformers), and the full plan measured beside it (default: engine for --format "
                        "compressed-tensors, else sysq)")
    p.add_argument("--no-compare", action="store_true",
                   help="under target engine, skip measuring the full plan beside the exported one (it repeats "
                        "mitigate and quantize: with learned rounding, the learned step runs twice)")
    p.add_argument("--calib", default="wikitext2-valid", help="calibration set name or path (default: %(default)s)")
    p.add_argument("--n", type=int, default=32, help="calibration windows (default: %(default)s)")
    p.add_argument("--seqlen", type=int, default=512, help="calibration window length (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="calibration sampling seed (default: %(default)s)")
    p.add_argument("--detect-n", type=int, default=8,
                   help="calibration windows (the first ones) detect runs on for the plan (default: %(default)s)")
    p.add_argument("--data", default="wikitext2", help="perplexity set (default: %(default)s)")
    p.add_argument("--ppl-windows", type=int, default=8, help="quick perplexity windows; 0 skips it (default: %(default)s)")
    p.add_argument("--ppl-seqlen", type=int, default=512, help="quick perplexity window length (default: %(default)s)")
    p.add_argument("--out", default=None, help="save the quantized model to this folder")
    p.add_argument("--format", default="sysq", choices=("sysq", "compressed-tensors"),
                   help="--out format: sysq (any recipe; sysq.load) or compressed-tensors (int8 W8A8, INT4/INT8 "
                        "weight-only, FP8: read by plain transformers with the compressed-tensors package, and vLLM) "
                        "(default: %(default)s)")
    if not any(a.dest == "quiet" for a in p._actions):
        p.add_argument("--quiet", action="store_true", help="no progress bars")


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _is_plan_file(spec: str) -> bool:
    return Path(spec).suffix in (".yaml", ".yml") or Path(spec).is_file()


def resolve_plan(spec: str, recipe, report, target: str):
    """A MitigationPlan from --mitigate (method string or YAML file) for `recipe`; None for 'none'."""
    from ..mitigate.api import plan, restrict_to_engine
    from ..mitigate.plan import MitigationPlan

    if _is_plan_file(spec):
        p = MitigationPlan.load(spec)
        if p.recipe is not None and p.recipe != recipe.name:
            raise SysqError(f"plan {spec} was made for recipe {p.recipe!r}, not {recipe.name!r}; pass --recipe "
                            f"{p.recipe} or make a plan for {recipe.name} (sysq detect --mitigate auto --recipe "
                            f"{recipe.name})")
        p.recipe = recipe.name if p.recipe is None else p.recipe
        return restrict_to_engine(p) if target == "engine" else p
    if spec == "none":
        return None
    return plan(report, recipe, spec, target=target)


def _needs_report(spec: str) -> bool:
    """Methods whose choices read the report (auto's rules, preserve-tokens' threshold, clip floors, channels)."""
    parts = set(spec.split("+"))
    return bool(parts & {"auto", "auto-fast", "preserve-tokens", "preserve-channels", "clip"})


def _check_inputs(args, recipe) -> None:
    """Everything that can be checked before a model loads: fail in a second, write nothing."""
    from ..mitigate.api import plan

    if args.mitigate != "none" and recipe.backend.startswith("bnb"):
        raise SysqError(f"recipe {recipe.name} quantizes with bitsandbytes' own scheme, which sysq's mitigation does "
                        "not feed; pass --mitigate none")
    if _is_plan_file(args.mitigate):
        resolve_plan(args.mitigate, recipe, None, args.target)     # parses, names unknown fields
    elif args.mitigate != "none":
        plan(None, recipe, args.mitigate)                         # unknown methods fail here
    if args.report:
        from ..detect.report import OutlierReport
        OutlierReport.load(args.report)
    if args.out and recipe.backend not in ("fake",):
        raise SysqError(f"--out saves simulated recipes only; {recipe.name} uses backend {recipe.backend!r}. "
                        "Drop --out, or save the simulated recipe (e.g. w8a8 instead of w8a8-int)")


def run(args) -> int:
    from evaluation.perplexity import perplexity

    from ..data import windows
    from ..detect import detect
    from ..detect.report import OutlierReport
    from ..mitigate.api import mitigate
    from ..models import load
    from ..quant.api import quantize
    from ..quant.io import save
    from ..quant.recipes import get_recipe

    quiet = getattr(args, "quiet", False)
    recipe = get_recipe(args.recipe)
    if getattr(args, "fast", False):
        from ..mitigate.api import fast_method
        args.mitigate = fast_method(args.mitigate)
    args.target = args.target or ("engine" if args.format == "compressed-tensors" else "sysq")
    _check_inputs(args, recipe)
    start = time.perf_counter()
    print(f"sysq quantize: model={args.model} dtype={args.dtype} recipe={recipe.describe()}")
    print(f"  mitigate={args.mitigate} target={args.target} calibration: {args.calib}, {args.n} windows x "
          f"{args.seqlen} tokens, seed {args.seed}" + (f"; report {args.report}" if args.report else ""))
    model, tok = load(args.model, dtype=args.dtype, device=args.device)
    mitigating = args.mitigate != "none"
    needs_calib = mitigating or recipe.method == "gptq" or (recipe.act is not None and not recipe.act.dynamic)
    calib = windows(args.calib, tok, n=args.n, seqlen=args.seqlen, seed=args.seed) if needs_calib else None
    ev = windows(args.data, tok, n=args.ppl_windows, seqlen=args.ppl_seqlen) if args.ppl_windows else None
    result = {"model": args.model, "recipe": recipe.to_dict(), "mitigate": args.mitigate, "target": args.target}

    def ppl(m, name):
        return perplexity(m, ev, quiet=quiet, model_name=args.model, recipe=name) if ev is not None else None

    before = ppl(model, "fp")
    if before is not None:
        print(f"FP: {before}")
        result["ppl_before"] = before.to_dict()

    report = None
    if args.report:
        report = OutlierReport.load(args.report)
        print(f"outlier report: {args.report}")
    elif mitigating and not _is_plan_file(args.mitigate) and _needs_report(args.mitigate):
        print(f"\n== detect on the first {args.detect_n} calibration windows")
        report = detect(model, calib.ids[: args.detect_n], tokenizer=tok, quiet=quiet)
    if report is not None:
        print(report.headline())
        result["outliers"] = report.summary

    p = resolve_plan(args.mitigate, recipe, report, args.target) if mitigating else None
    full = None
    if (p is not None and args.target == "engine" and ev is not None and not _is_plan_file(args.mitigate)
            and not getattr(args, "no_compare", False)):
        full = _full_plan_ppl(model, recipe, report, args, calib, ppl, quiet)
        result["full_plan"] = full
    if p is not None:
        print(f"\n== mitigate ({p.method}, target {p.target})")
        if p.search is not None and p.search.chosen is None:     # the search's bounded cost, before it runs
            print(next(line for line in str(p).splitlines() if line.startswith("  auto:")))
        mitigate(model, p, calib, quiet=quiet, report=report)
        print(p)
        result["plan"] = p.to_dict()
    summary = quantize(model, recipe, calib, quiet=quiet)
    print(summary)
    result["summary"] = summary.to_dict()
    after = ppl(model, recipe.name)
    if after is not None:
        print(f"after: {after}")
        print(f"perplexity {before.ppl:.3f} -> {after.ppl:.3f} (x{after.ppl / before.ppl:.4f} FP) on {ev.source}, "
              f"{len(ev)} windows x {ev.seqlen}, plan {args.mitigate} (target {args.target})")
        if full is not None:
            print(f"  the full plan (target sysq, not exportable) gives {full['ppl']:.3f} (x{full['ppl'] / before.ppl:.4f}"
                  f" FP): the engine restriction costs x{after.ppl / full['ppl']:.4f}")
        result["ppl_after"] = after.to_dict()
    if args.out:
        result["seconds"] = time.perf_counter() - start
        extra = {"quantize.json": json.dumps(result, indent=2, default=str) + "\n"}
        if report is not None:
            extra["outliers.md"] = report.headline() + "\n"
        out = save(model, args.out, tok, format=args.format, extra=extra)
        result["bytes_on_disk"] = _dir_bytes(out)
        print(f"saved to {out} ({result['bytes_on_disk'] / 2**20:.1f} MiB on disk, format {args.format})")
        result["verify"] = _verify(out, args, model, ev, after, quiet)
        atomic_write_text(out / "quantize.json", json.dumps(result, indent=2, default=str) + "\n")
    return 0


def _full_plan_ppl(model, recipe, report, args, calib, ppl, quiet) -> dict:
    """The unrestricted plan on a copy of the model: what the engine restriction gives up."""
    from ..mitigate.api import mitigate, plan
    from ..quant.api import quantize

    print("\n== the full plan (target sysq), for comparison")
    m = copy.deepcopy(model)
    p = plan(report, recipe, args.mitigate, target="sysq")
    mitigate(m, p, calib, quiet=quiet, report=report)
    quantize(m, recipe, calib, quiet=quiet)
    res = ppl(m, recipe.name + " (full plan)")
    print(f"full plan: {res}")
    del m
    return {"ppl": res.ppl, "plan": p.to_dict()}


def _verify(out: Path, args, model, ev, after, quiet) -> dict:
    """Reload what was written and check it: identical logits and perplexity (sysq format), or perplexity through
    plain transformers (compressed-tensors; dynamic activations round per token slightly differently there)."""
    import torch
    from evaluation.perplexity import perplexity

    if args.format == "sysq":
        from ..models import load
        again, _ = load(str(out), dtype=args.dtype, device=args.device)
        ids = (ev.ids[:1] if ev is not None else torch.tensor([[1, 2, 3, 4]])).to(next(model.parameters()).device)
        with torch.no_grad():
            diff = (again(input_ids=ids).logits - model(input_ids=ids).logits).abs().max().item()
        print(f"reloaded with sysq.load: logits max |diff| {diff:.3g} on one window")
        res = {"loader": "sysq.load", "logits_max_abs_diff": diff}
    else:
        from ..quant.export import load_with_transformers
        again = load_with_transformers(out, dtype=args.dtype, device=args.device, quiet=quiet)
        res = {"loader": "transformers (compressed-tensors)"}
    if ev is not None:
        ppl = perplexity(again, ev, quiet=quiet, model_name=str(out), recipe=args.format).ppl
        res.update(ppl=ppl, ratio_to_sysq=ppl / after.ppl)
        print(f"reloaded ({res['loader']}): perplexity {ppl:.3f} ({ppl / after.ppl - 1:+.3%} against sysq's "
              f"{after.ppl:.3f})")
    return res
