"""Python-level profile of one detect on the 8B shape (bf16, 16 x 512, batch 8): where the host time goes, by
function (cProfile, cumulative and internal time). GPU: python3 scripts/h200_session4/detect_cprofile.py"""
import cProfile
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sysq  # noqa: E402
from bench_scale import CONFIGS, build, windows  # noqa: E402

model = build("8b", None, "cuda", torch.bfloat16)
ids = windows(model.config, 16, 512)
sysq.detect(model, ids[:1], quiet=True, batch_size=8)
for _ in range(2):
    torch.cuda.synchronize(); t = time.perf_counter()
    sysq.detect(model, ids, quiet=True, batch_size=8)
    torch.cuda.synchronize(); print("detect s", round(time.perf_counter() - t, 3))
pr = cProfile.Profile()
torch.cuda.synchronize(); t = time.perf_counter(); pr.enable()
sysq.detect(model, ids, quiet=True, batch_size=8)
torch.cuda.synchronize(); pr.disable(); print("profiled detect s", round(time.perf_counter() - t, 3))
st = pstats.Stats(pr)
st.sort_stats("cumtime").print_stats(60)
st.sort_stats("tottime").print_stats(30)
