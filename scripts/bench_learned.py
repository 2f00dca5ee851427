#!/usr/bin/env python
"""The cost of the learned rounding step (sysq/quant/learn.py) on a model: seconds per layer and in total.

    python scripts/bench_learned.py [--recipe w4a16-g64+fz+learned] [--calib-n 8] [--steps 50] [--device cpu]

Prints the settings, one line per decoder layer (steps, output error RTN -> learned, seconds) and the total, and
writes OUT/bench_learned.json (OUT: $OUT or out/). Run under the CPU lock on the shared machine.
"""
import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import sysq  # noqa: E402
from sysq.io import atomic_write_text  # noqa: E402
from sysq.quant import get_recipe, quantize  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--recipe", default="w4a16-g64+fz+learned")
    p.add_argument("--calib-n", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--steps", type=int, default=None, help="learn_steps (default: the recipe's)")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("httpx", "sysq.quant.api"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    r = get_recipe(a.recipe)
    if a.steps is not None:
        r = get_recipe({**r.to_dict(), "learn_steps": a.steps})
    if r.method != "learned":
        r = get_recipe({**r.to_dict(), "method": "learned"})
    model, tok = sysq.load(a.model, device=a.device)
    calib = sysq.calibration(tok, n=a.calib_n, seqlen=a.seqlen, seed=0)
    print(f"bench_learned: model={a.model} recipe={r.describe()} calib={a.calib_n}x{a.seqlen} device={a.device} "
          f"threads={torch.get_num_threads()} load={os.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    s = quantize(model, r, calib, quiet=True)
    total = time.perf_counter() - t0
    learned = s.calibration["learned"]
    print(f"learned step {learned['seconds']:.1f} s ({learned['layers']} layers x {learned['steps_per_layer']} steps), "
          f"quantize total {total:.1f} s, layers kept {learned['layers_kept']}/{learned['layers']}")
    out = Path(os.environ.get("OUT", "out"))
    atomic_write_text(out / "bench_learned.json", json.dumps({"recipe": r.to_dict(), "learned": learned,
                                                              "quantize_seconds": total, "device": a.device}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
