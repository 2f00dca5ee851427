#!/usr/bin/env python
"""A quick INT4 check on SmolLM2 before the table: one CONFIG[@PLAN][,field=value...] per argument, perplexity on
NW windows of WikiText-2 test from OFF (a comma list: each set measured on the same quantized model), calibration CN x 512 (WikiText-2 valid, seed 0), ratio to FP on the same
windows. A field's value is a number, true / false, null (e.g. learn_amp=null: train in the model's dtype) or a string.

    NW=8 flock /tmp/sysq-cpu.lock python scripts/int4_probe.py w4a8+g64+fz@auto-fast+learned \
        'w4a16-g64+fz+learned,learn_lr=0.005'

Prints one PROBE line per configuration (ppl, x FP, quantize seconds, the learned step's seconds); the FP
perplexity and the outlier report (detect on 8 calibration windows) are cached under $PROBE_CACHE (/tmp/int4b).
DEVICE=cuda runs it on a GPU (default: the CPU). PROBE_KEEP_MITIGATED=1 keeps each mitigated model (before
quantize) under $PROBE_CACHE and loads it again for the same CONFIG@PLAN and CN: probes that change only learn_*
fields skip the plan's measured search (the same model, so the same numbers; `quant` then counts no search).
"""
import json
import logging
import os
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import sysq  # noqa: E402
from evaluation.perplexity import perplexity  # noqa: E402
from sysq.io import atomic_file, atomic_write_bytes, atomic_write_text  # noqa: E402
from sysq.mitigate.api import mitigate, plan  # noqa: E402
from sysq.quant import get_recipe, quantize  # noqa: E402


def _value(v: str):
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    if v.lower() in ("null", "none"):
        return None
    return float(v) if "." in v else int(v) if v.lstrip("-").isdigit() else v


def main(argv) -> int:
    logging.basicConfig(level=logging.WARNING)
    nw, cn = int(os.environ.get("NW", 8)), int(os.environ.get("CN", 8))
    offs = [int(o) for o in os.environ.get("OFF", "0").split(",")]
    cache = Path(os.environ.get("PROBE_CACHE", "/tmp/int4b"))
    device = os.environ.get("DEVICE")          # None: the CPU; "cuda" on a GPU machine
    cache.mkdir(parents=True, exist_ok=True)
    model, tok = sysq.load("smollm2-135m", device=device)
    wins = {off: sysq.windows("wikitext2", tok, n=nw, seqlen=512, offset=off) for off in offs}
    calib = sysq.calibration(tok, n=cn, seqlen=512, seed=0)
    report_file = cache / f"report_{cn}.pkl"
    fp = {}
    for off, win in wins.items():
        fp_file = cache / f"fp_{nw}_{off}.json"
        if not fp_file.exists():
            atomic_write_text(fp_file, json.dumps({"ppl": perplexity(model, win, quiet=True).ppl}))
        fp[off] = json.loads(fp_file.read_text())["ppl"]
    report = None
    for cfg in argv:
        name, *kv = cfg.split(",")
        extra = {k: _value(v) for k, v in (x.split("=") for x in kv)}
        rec, _, method = name.partition("@")
        model, tok = sysq.load("smollm2-135m", device=device)
        t0 = time.perf_counter()
        r = get_recipe(rec)
        if method:
            if "auto" in method and report is None:
                if report_file.exists():
                    report = pickle.loads(report_file.read_bytes())
                else:
                    report = sysq.detect(model, calib.ids[:8], tokenizer=tok, quiet=True)
                    atomic_write_bytes(report_file, pickle.dumps(report))
            saved = cache / f"mitigated_{cn}_{rec}@{method}.pt"
            if os.environ.get("PROBE_KEEP_MITIGATED") and saved.exists():     # the same plan: skip its search
                model, r = torch.load(saved, weights_only=False)
            else:
                r = mitigate(model, plan(report, rec, method=method), calib, quiet=True, report=report)
                if os.environ.get("PROBE_KEEP_MITIGATED"):     # atomic: probes started beside it wait for the file
                    with atomic_file(saved) as tmp:
                        torch.save((model, r), tmp)
        if extra:
            r = get_recipe({**r.to_dict(), **extra})
        s = quantize(model, r, calib, quiet=True)
        seconds = time.perf_counter() - t0
        learned = (s.calibration or {}).get("learned")
        more = f" learned {learned['seconds']}s kept {learned['layers_kept']}" if learned else ""
        for off, win in wins.items():
            ppl = perplexity(model, win, quiet=True).ppl
            print(f"PROBE {cfg:55s} NW={nw} OFF={off} CN={cn} ppl {ppl:.3f} x {ppl / fp[off]:.4f}  quant {seconds:.0f}s"
                  f"{more}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
