"""detect's report on a GPU with the fused Triton forms (sites, weights, Q/K/V norms) against the torch forms
(SYSQ_REDUCE=torch) on the same model and windows: identical except the float32 sums (check_detect_same.compare).

    python3 scripts/h200_session18/check_forms.py [--config 8b] [--layers 8] [--windows 16]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import sysq  # noqa: E402
from bench_scale import build, windows  # noqa: E402
from check_detect_same import compare  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="8b")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    a = p.parse_args()
    cuda = torch.cuda.is_available()
    model = build(a.config, a.layers, "cuda" if cuda else "cpu", torch.bfloat16 if cuda else torch.float32)
    ids = windows(model.config, a.windows, a.seqlen)
    reports = {}
    for form in ("triton", "torch"):
        os.environ["SYSQ_REDUCE"] = "auto" if form == "triton" else "torch"
        d = sysq.detect(model, ids, quiet=True, batch_size=a.batch_size).to_dict()
        d.pop("cost")
        reports[form] = json.loads(json.dumps(d))
    verdict = compare(reports["triton"], reports["torch"])
    print(f"{a.config} ({a.layers or 'all'} layers), {a.windows} x {a.seqlen}: fused forms against the torch forms: "
          f"{verdict}")
    return 0 if verdict.startswith("identical") else 1


if __name__ == "__main__":
    sys.exit(main())
