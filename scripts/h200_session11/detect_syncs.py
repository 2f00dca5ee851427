"""Which of detect's host lines make the host wait for the device (issue 12): one detect of the 8B shape under
torch.cuda.set_sync_debug_mode("warn"), every synchronizing call printed once with the sysq lines that led to it.

    python scripts/h200_session11/detect_syncs.py
"""
from __future__ import annotations

import collections
import sys
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import sysq  # noqa: E402
from bench_scale import build, forward, windows  # noqa: E402

seen: collections.Counter = collections.Counter()


def show(message, category, filename, lineno, file=None, line=None):
    stack = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in traceback.extract_stack()[:-1]
             if "/sysq/" in f.filename or "transformers" in f.filename]
    seen[(str(message).split("\n")[0][:90], " <- ".join(reversed(stack[-6:])))] += 1


def main() -> None:
    model = build("8b", None, "cuda", torch.bfloat16)
    ids = windows(model.config, 16, 512)
    forward(model, ids[:1], 1)
    sysq.detect(model, ids, quiet=True, batch_size=8)
    torch.cuda.synchronize()
    warnings.showwarning = show
    warnings.simplefilter("always")
    torch.cuda.set_sync_debug_mode("warn")
    try:
        sysq.detect(model, ids, quiet=True, batch_size=8)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    print(f"{sum(seen.values())} synchronizing calls in one detect, {len(seen)} places:")
    for (msg, where), n in seen.most_common():
        print(f"{n:5d}  {msg} | {where}")


if __name__ == "__main__":
    main()
