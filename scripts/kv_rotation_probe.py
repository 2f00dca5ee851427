#!/usr/bin/env python
"""Rotated keys (+kvrot, QuaRot's R3) on one mitigated SmolLM2: the same plan quantized with the keys as they are and
in a Hadamard basis, side by side, x FP on WikiText-2 test windows (NW from each OFF, as scripts/int4_probe.py).

    SYSQ_DATA=... NW=40 OFF=0,40 PROBE_CACHE=/tmp/int4kvrot flock /tmp/sysq-cpu.lock \
        python scripts/kv_rotation_probe.py MITIGATED.pt [METHOD ...]

MITIGATED.pt is a model int4_probe.py kept (PROBE_KEEP_MITIGATED=1: (model, recipe) after the plan); METHOD is the
weights' rounding in place of the plan's (default rtn; gptq; learnedNxB: learned rounding, N steps
of B windows, e.g. learned25x2). Prints one KVROT line per
(method, keys); the FP perplexities come from int4_probe.py's cache.
"""
import copy
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import sysq  # noqa: E402
from evaluation.perplexity import perplexity  # noqa: E402
from sysq.quant import get_recipe, quantize  # noqa: E402


def main(argv) -> int:
    saved, methods = Path(argv[0]), argv[1:] or ["rtn"]
    nw, cn = int(os.environ.get("NW", 40)), int(os.environ.get("CN", 32))
    offs = [int(o) for o in os.environ.get("OFF", "0,40").split(",")]
    cache = Path(os.environ.get("PROBE_CACHE", "/tmp/int4kvrot"))
    _, tok = sysq.load("smollm2-135m")
    wins = {off: sysq.windows("wikitext2", tok, n=nw, seqlen=512, offset=off) for off in offs}
    calib = sysq.calibration(tok, n=cn, seqlen=512, seed=0)
    fp = {off: json.loads((cache / f"fp_{nw}_{off}.json").read_text())["ppl"] for off in offs}
    base, r0 = torch.load(saved, weights_only=False)
    for method in methods:
        for rot in (False, True):
            model = copy.deepcopy(base)
            if getattr(base, "_sysq_plan", None) is not None:    # the plan decides the rounding: this METHOD instead
                plan = dataclasses.replace(base._sysq_plan, learned=None, rounding=None if method == "rtn" else
                                           method.rstrip("0123456789x"))
                object.__setattr__(model, "_sysq_plan", plan)
            fields = {"method": "rtn"}
            if method.startswith("learned"):      # learnedNxB: the recipe's own learned budget, N steps x B windows
                steps, _, batch = method[len("learned"):].partition("x")
                fields = {"method": "learned", "learn_steps": int(steps or 50), "learn_batch_size": int(batch or 1)}
            r = get_recipe({**r0.to_dict(), **fields, "kv": {**r0.to_dict()["kv"], "key_rotation": rot}})
            t0 = time.perf_counter()
            quantize(model, r, calib, quiet=True)
            sec = time.perf_counter() - t0
            line = " ".join(f"w{off}-{off + nw - 1} {perplexity(model, w, quiet=True).ppl / fp[off]:.4f}"
                            for off, w in wins.items())
            print(f"KVROT method={method:7s} key_rotation={rot!s:5s} {line}  quantize {sec:.0f}s  ({r.describe()})",
                  flush=True)
            del model
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
