#!/usr/bin/env python
"""How far INT4 weight grids sit from the default model's own weights (no data, no forward pass).

SmolLM2-135M here comes from a Q4_1 GGUF: each block of 32 weights is d * q + m with a float minimum m.
sysq's asymmetric INT4 (like GPTQ/AWQ) stores an integer zero point instead, so even at group 32 it
cannot hit that grid; a float minimum can. Prints sum (W_q - W)^2 / sum W^2 over every decoder linear.

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


def float_min_quant(w: torch.Tensor, group: int, bits: int = 4) -> torch.Tensor:
    """Q4_1-style: per group scale (max - min) / (2^bits - 1) and the float minimum as offset."""
    g = w.reshape(w.shape[0], -1, group)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    s = ((hi - lo) / (2 ** bits - 1)).clamp_min(1e-12)
    return (torch.round((g - lo) / s).clamp(0, 2 ** bits - 1) * s + lo).reshape_as(w)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    model, _ = sysq.load(args.model)
    err: dict[str, float] = {}
    energy = 0.0
    for ref in get_adapter(model).linear_refs():
        w = ref.module.weight.detach().float()
        energy += float(w.pow(2).sum())
        for group in (32, 64, 128):
            g = group if w.shape[1] % group == 0 else 64          # the w4a16 preset's 'ragged: halve'
            for name, wq in ((f"g{group} integer zero point (sysq asym)", fake_quantize_tensor(w, 4, False, "group", g)),
                             (f"g{group} float minimum (Q4_1 style)", float_min_quant(w, g))):
                err[name] = err.get(name, 0.0) + float((wq - w).pow(2).sum())
    print(f"model={args.model}: relative squared weight error of INT4 RTN, all decoder linears")
    for name, v in err.items():
        print(f"  {name:40s} {v / energy:.3e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
