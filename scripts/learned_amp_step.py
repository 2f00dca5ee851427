#!/usr/bin/env python
"""One SmolLM2 layer's learned step (10 SignSGD steps x 2 windows x 512, w4a16-g64+fz) in float32 and under bf16 autocast,
by learn_block (which applies LearnConfig.amp as given): what bf16 costs on this device. Run under the CPU lock.
--profile: then a torch.profiler op table of 5 float32 steps (where a CPU's step goes)."""
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import sysq  # noqa: E402
from sysq.arch import get_adapter  # noqa: E402
from sysq.quant.api import prepare  # noqa: E402
from sysq.quant.gptq import layer_inputs, run_layer  # noqa: E402
from sysq.quant.learn import LearnConfig, learn_block  # noqa: E402
from sysq.quant.linear import QuantLinear  # noqa: E402
from sysq.quant.recipes import get_recipe  # noqa: E402

model, tok = sysq.load("smollm2-135m")
calib = sysq.calibration(tok, n=2, seqlen=512, seed=0)
prepare(model, get_recipe("w4a16-g64+fz+learned"))
inputs, kw = layer_inputs(model, calib)


@torch.no_grad()
def step(steps: int, amp: str | None) -> None:
    """learn_block on a fresh copy of layer 0."""
    layer = copy.deepcopy(get_adapter(model).layers()[0])
    qls = [m for m in layer.modules() if isinstance(m, QuantLinear)]
    learn_block(layer, qls, inputs, lambda l, x: run_layer(l, x, kw), LearnConfig(steps=steps, batch_size=2, amp=amp))


for amp in (None, "bf16", None, "bf16"):
    t = time.perf_counter()
    step(10, amp)
    print(f"amp={amp}: one SmolLM2 layer, 10 steps x 2 windows x 512: {time.perf_counter() - t:.1f} s", flush=True)
if "--profile" in sys.argv:
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(5, None)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
