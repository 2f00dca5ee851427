#!/usr/bin/env python
"""How far INT4 weight grids sit from the default model's own weights (no data, no forward pass).

SmolLM2-135M here comes from a Q4_1 GGUF: each block of 32 weights is d * q + m with a float minimum m.
sysq's default asymmetric INT4 (like GPTQ/AWQ) stores an integer zero point, so even at group 32 it
cannot hit that grid; a float zero point (QuantSpec.zero_point "float", recipes `+fz`) can. Prints
sum (W_q - W)^2 / sum W^2 over every decoder linear, and how many weights differ at all.

    .venv/bin/python scripts/int4_grid_error.py
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sysq  # noqa: E402
from sysq.arch import get_adapter  # noqa: E402
from sysq.quant.math import fake_quantize_tensor  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    model, _ = sysq.load(args.model)
    err: dict[str, float] = {}
    differ: dict[str, int] = {}
    energy = 0.0
    for ref in get_adapter(model).linear_refs():
        w = ref.module.weight.detach().float()
        energy += float(w.pow(2).sum())
        for group in (32, 64, 128):
            g = group if w.shape[1] % group == 0 else 64          # the w4a16 preset's 'ragged: halve'
            for name, fz in ((f"g{group} integer zero point (sysq asym)", False),
                             (f"g{group} float zero point (+fz, Q4_1 style)", True)):
                wq = fake_quantize_tensor(w, 4, False, "group", g, float_zero=fz)
                err[name] = err.get(name, 0.0) + float((wq - w).pow(2).sum())
                differ[name] = differ.get(name, 0) + int((wq != w).sum())
    n = sum(ref.module.weight.numel() for ref in get_adapter(model).linear_refs())
    print(f"model={args.model}: relative squared weight error of INT4 RTN, all decoder linears ({n} weights)")
    for name, v in err.items():
        print(f"  {name:45s} {v / energy:.3e}   weights changed: {differ[name] / n:6.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
