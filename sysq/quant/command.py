"""`sysq quantize` and `python scripts/quantize.py`: one implementation, the same arguments.

Prints what was quantized (modules per scheme), bytes before and after, and perplexity before and after
at a quick setting (WikiText-2 raw test, first --ppl-windows windows of --ppl-seqlen tokens).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import SysqError


def add_arguments(p) -> None:
    p.add_argument("--model", default="smollm2-135m", help="alias, HF or sysq folder, .gguf or hub id (default: %(default)s)")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 (default: %(default)s)")
    p.add_argument("--recipe", default="w8a8-static",
                   help="preset (w8a16, w4a16, w4a16-pc, w8a8, w8a8-static, w4a8, w4a4, w8a8-int, bnb-int8, bnb-nf4,"
                        " ...) with +kv8/+kv4/+gptq/+mse, or a YAML file (default: %(default)s)")
    p.add_argument("--calib", default="wikitext2-valid", help="calibration set name or path (default: %(default)s)")
    p.add_argument("--n", type=int, default=32, help="calibration windows (default: %(default)s)")
    p.add_argument("--seqlen", type=int, default=512, help="calibration window length (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="calibration sampling seed (default: %(default)s)")
    p.add_argument("--data", default="wikitext2", help="perplexity set (default: %(default)s)")
    p.add_argument("--ppl-windows", type=int, default=8, help="quick perplexity windows; 0 skips it (default: %(default)s)")
    p.add_argument("--ppl-seqlen", type=int, default=512, help="quick perplexity window length (default: %(default)s)")
    p.add_argument("--out", default=None, help="save the quantized model to this folder (sysq.load reads it back)")
    p.add_argument("--format", default="sysq", choices=("sysq", "compressed-tensors"),
                   help="--out format: sysq (any recipe; sysq.load) or compressed-tensors (W8A8 only; read by "
                        "transformers with the compressed-tensors package, and vLLM) (default: %(default)s)")
    if not any(a.dest == "quiet" for a in p._actions):
        p.add_argument("--quiet", action="store_true", help="no progress bars")


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def run(args) -> int:
    from evaluation.perplexity import perplexity

    from ..data import windows
    from ..models import load
    from .api import quantize
    from .io import export_compressed_tensors, save
    from .recipes import get_recipe

    quiet = getattr(args, "quiet", False)
    recipe = get_recipe(args.recipe)
    if args.out and recipe.backend != "fake":
        raise SysqError(f"--out saves simulated recipes only; {recipe.name} uses backend {recipe.backend!r}. "
                        "Drop --out, or save the simulated recipe (e.g. w8a8 instead of w8a8-int)")
    print(f"sysq quantize: model={args.model} dtype={args.dtype} recipe={recipe.describe()}")
    print(f"  calibration: {args.calib}, {args.n} windows x {args.seqlen} tokens, seed {args.seed}")
    model, tok = load(args.model, dtype=args.dtype)
    needs_calib = recipe.method == "gptq" or (recipe.act is not None and not recipe.act.dynamic)
    calib = windows(args.calib, tok, n=args.n, seqlen=args.seqlen, seed=args.seed) if needs_calib else None
    ev = None
    if args.ppl_windows:
        ev = windows(args.data, tok, n=args.ppl_windows, seqlen=args.ppl_seqlen)
        before = perplexity(model, ev, quiet=quiet, model_name=args.model, recipe="fp")
        print(f"before: {before}")
    summary = quantize(model, recipe, calib, quiet=quiet)
    print(summary)
    result = {"model": args.model, "recipe": recipe.to_dict(), "summary": summary.to_dict()}
    if ev is not None:
        after = perplexity(model, ev, quiet=quiet, model_name=args.model, recipe=recipe.name)
        print(f"after:  {after}")
        print(f"perplexity {before.ppl:.3f} -> {after.ppl:.3f} ({after.ppl / before.ppl - 1:+.1%}) on {ev.source}, "
              f"{len(ev)} windows x {ev.seqlen}")
        result.update(ppl_before=before.to_dict(), ppl_after=after.to_dict())
    if args.out:
        if getattr(args, "format", "sysq") == "compressed-tensors":
            out = export_compressed_tensors(model, args.out, tok)
            how = f"AutoModelForCausalLM.from_pretrained({str(out)!r}) (needs compressed-tensors) or vLLM"
        else:
            out = save(model, args.out, tok)
            how = f"sysq.load({str(out)!r})"
        print(f"saved to {out} ({_dir_bytes(out) / 2**20:.1f} MiB on disk); reload with {how}")
        tmp = out / ".quantize.json.tmp"
        tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
        os.replace(tmp, out / "quantize.json")
    return 0
