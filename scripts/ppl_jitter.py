"""How much of a perplexity difference is float noise: the same quantized model, its input embeddings scaled by
(1 + eps * N(0, 1)) with a few seeds, against the two fp32 computations of INT8 W8A8 (codes times codes, as the
int8 kernel; dequantized float product, as transformers' compressed-tensors reload).

    flock /tmp/sysq-cpu.lock python scripts/ppl_jitter.py --recipe w8a8 --windows 8 --out results/kernels/jitter

A model whose outlier tokens round most of their other entries to 0 or 1 step (SmolLM2 under per-token or
per-tensor INT8 with no mitigation) flips a few roundings on a 1e-7 change and moves perplexity by tenths of a
percent; comparisons between two fp32 computations of one quantized model are only meaningful against this spread.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sysq  # noqa: E402
from evaluation.perplexity import perplexity  # noqa: E402
from sysq.io import atomic_write_text  # noqa: E402
from sysq.quant.linear import QuantLinear  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--recipe", default="w8a8")
    p.add_argument("--method", default="none", help="mitigation plan applied before quantizing (none, auto, ...)")
    p.add_argument("--windows", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--calib-n", type=int, default=4)
    p.add_argument("--eps", type=float, default=1e-6)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default="out/jitter")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    model, tok = sysq.load(a.model)
    calib = sysq.calibration(tok, n=a.calib_n, seqlen=a.seqlen, seed=0)
    evalw = sysq.windows("wikitext2", tok, n=a.windows, seqlen=a.seqlen)
    fp = perplexity(model, evalw, quiet=a.quiet).ppl
    if a.method != "none":
        sysq.mitigate(model, sysq.plan(sysq.detect(model, calib, quiet=a.quiet), recipe=a.recipe, method=a.method),
                      calib)
    sysq.quantize(model, a.recipe, calib, quiet=a.quiet)
    jitter = {"seed": None}

    def perturb(module, inputs, out):
        if jitter["seed"] is None:
            return out
        g = torch.Generator().manual_seed(jitter["seed"])
        return out * (1 + a.eps * torch.randn(out.shape, generator=g)).to(out.dtype)

    # each linear on one window's real inputs: the integer product against the dequantized reference
    worst = {"rel": 0.0}

    def compare(m, inputs, out):
        ref = torch.nn.functional.linear(m.quantize_input(inputs[0]), m.dequantized_weight(out.dtype), m.bias)
        worst["rel"] = max(worst["rel"], float((out - ref).abs().max() / ref.abs().max()))

    hooks = [m.register_forward_hook(compare) for m in model.modules()
             if isinstance(m, QuantLinear) and m.integer_product]
    with torch.no_grad():
        model(input_ids=evalw.ids[:1])
    for h in hooks:
        h.remove()
    print(f"{len(hooks)} linears on the integer path; worst max |integer - dequantized| / max |dequantized| on one "
          f"window: {worst['rel']:.2e}")
    model.get_input_embeddings().register_forward_hook(perturb)
    rows = []
    integer = QuantLinear.integer_product
    for path in ("integer", "dequantized"):
        QuantLinear.integer_product = integer if path == "integer" else property(lambda self: False)
        for seed in [None, *range(1, a.seeds + 1)]:
            jitter["seed"] = seed
            ppl = perplexity(model, evalw, quiet=True).ppl
            rows.append({"path": path, "seed": seed, "ppl": ppl, "x_fp": ppl / fp})
            print(f"{path:12s} jitter seed {seed}: {ppl:.4f} ({ppl / fp:.4f}x FP)", flush=True)
    QuantLinear.integer_product = integer
    ppls = [r["ppl"] for r in rows]
    spread = (max(ppls) - min(ppls)) / statistics.median(ppls)
    print(f"FP {fp:.4f}; {len(ppls)} runs: min {min(ppls):.4f}, max {max(ppls):.4f}, spread {100 * spread:.2f}% "
          f"of the median (eps {a.eps}, {a.windows} x {a.seqlen}, {a.recipe}, plan {a.method})")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "jitter.json", json.dumps({"settings": vars(a), "fp": fp, "rows": rows, "spread": spread,
                                                       "per_linear_worst": worst["rel"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
