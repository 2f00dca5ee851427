"""Issue 12, sixteenth session: what detect's site_lists (58 ms of the report's tail in call G16's cProfile, the
device idle) reads at the 8B shape. Runs detect on bench_scale's planted random Llama (16 x 512, batch 8), saves
the host arrays site_lists reads, per table, to OUT/site_tables.npz, and times site_lists and each
_ordered_nonzero call.

    python3 scripts/h200_session16/dump_site_lists.py OUT
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import sysq  # noqa: E402
import sysq.detect as D  # noqa: E402
from sysq.detect import activation as A  # noqa: E402
from bench_scale import build, windows  # noqa: E402

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
KEYS = ("massive_count", "absmax", "int8_count", "channel_absmax5", "channel_absmax5_ok", "channel_absmax5_x",
        "channel_absmean5", "channel_absmean5_ok", "channel_absmean5_x")
saved, timings = {}, []
real_lists, real_ordered = A.site_lists, A._ordered_nonzero


def ordered(count, key, k=None):
    t = time.perf_counter()
    r = real_ordered(count, key, k)
    timings.append((f"_ordered_nonzero {count.shape} k={k} nnz={int(np.count_nonzero(count))}",
                    time.perf_counter() - t))
    return r


def lists(tables):
    if not saved:
        for i, t in enumerate(tables):
            for k in KEYS:
                saved[f"t{i}_{k}"] = np.array(t.host[k])
    t0 = time.perf_counter()
    real_lists(tables)
    timings.append(("site_lists", time.perf_counter() - t0))


A._ordered_nonzero, D.site_lists = ordered, lists
model = build("8b", None, "cuda", torch.bfloat16)
ids = windows(model.config, 16, 512)
for rep in range(3):
    timings.clear()
    sysq.detect(model, ids, quiet=True, batch_size=8)
    print(f"detect {rep}: " + "; ".join(f"{n} {s * 1e3:.1f} ms" for n, s in timings))
np.savez_compressed(out / "site_tables.npz", **saved)
print({k: (v.shape, str(v.dtype)) for k, v in saved.items()})
