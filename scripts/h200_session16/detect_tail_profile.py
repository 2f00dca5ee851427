"""cProfile of one sysq.detect on the 8B shape (bench_scale's planted random Llama, 16 x 512, batch 8) after two
warm-up runs: the functions of sysq by cumulative time, to see what the report's tail after the last batch
(~85 ms on call F16's host, the device idle) spends it on. Issue 12, sixteenth session.

    python3 scripts/h200_session16/detect_tail_profile.py [--config 8b] [--top 70]
"""
import argparse
import cProfile
import gc
import io
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import sysq  # noqa: E402
from bench_scale import _sync, build, windows  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--config", default="8b")
p.add_argument("--top", type=int, default=70)
a = p.parse_args()
dev = "cuda" if torch.cuda.is_available() else "cpu"
model = build(a.config, None, dev, torch.bfloat16 if dev == "cuda" else torch.float32)
ids = windows(model.config, 16, 512)
for _ in range(2):
    sysq.detect(model, ids, quiet=True, batch_size=8)
gc.collect()
_sync()
prof = cProfile.Profile()
prof.enable()
sysq.detect(model, ids, quiet=True, batch_size=8)
_sync()
prof.disable()
for order in ("cumulative", "tottime"):
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats(order).print_stats("sysq|numpy|json", a.top)
    print(f"==== by {order}\n" + s.getvalue()[-12000:])
