#!/usr/bin/env python
"""One SmolLM2 layer's learned step by learn_block (which applies LearnConfig.amp as given): the seconds of N SignSGD
steps and of 0 steps (the error passes alone), so the cost of one step. Default: 10 steps x 2 windows x 512,
w4a16-g64+fz, layer 0, in float32 and under bf16 autocast (what bf16 costs on this device). Run under the CPU lock.

    python scripts/learned_amp_step.py                                      # fp32 against bf16, w4a16-g64+fz
    python scripts/learned_amp_step.py --amp none --batch-size 1 --steps 20 --layer 5
    python scripts/learned_amp_step.py --amp none --steps 20 --layer 5 \\
        --mitigated /tmp/int4kvrot/mitigated_32_...pt      # a model and recipe int4_probe.py kept (PROBE_KEEP_MITIGATED)

--profile: then a torch.profiler op table of 5 float32 steps (where a CPU's step goes)."""
import argparse
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
from sysq.quant.recipes import act_clip_learnable, get_recipe  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--recipe", default="w4a16-g64+fz")
ap.add_argument("--mitigated", help="(model, recipe) saved by int4_probe.py; --recipe is then ignored")
ap.add_argument("--amp", default="none,bf16", help="comma list of none | bf16, each timed in turn, twice")
ap.add_argument("--steps", type=int, default=10)
ap.add_argument("--batch-size", type=int, default=2)
ap.add_argument("--windows", type=int, default=2, help="calibration windows (the error passes' count)")
ap.add_argument("--layer", type=int, default=0)
ap.add_argument("--profile", action="store_true")
args = ap.parse_args()

model, tok = sysq.load("smollm2-135m")
if args.mitigated:
    model, r = torch.load(args.mitigated, weights_only=False)
else:
    r = get_recipe(args.recipe)
prepare(model, r)
calib = sysq.calibration(tok, n=args.windows, seqlen=512, seed=0)
inputs, kw = layer_inputs(model, calib)
act_clip = act_clip_learnable(r.act)


@torch.no_grad()
def step(steps: int, amp: str | None) -> float:
    """Seconds of learn_block on a fresh copy of the layer."""
    layer = copy.deepcopy(get_adapter(model).layers()[args.layer])
    qls = [m for m in layer.modules() if isinstance(m, QuantLinear)]
    t = time.perf_counter()
    learn_block(layer, qls, inputs, lambda l, x: run_layer(l, x, kw),
                LearnConfig(steps=steps, batch_size=args.batch_size, amp=amp, act_clip=act_clip))
    return time.perf_counter() - t


what = f"{args.mitigated or r.name}, layer {args.layer}, {args.steps} steps x {args.batch_size} windows x 512"
for amp in args.amp.split(",") * 2:
    amp = None if amp == "none" else amp
    base, full = step(0, amp), step(args.steps, amp)
    print(f"amp={amp}: {what}: {full:.2f} s; 0 steps (error passes over {args.windows} windows) {base:.2f} s; "
          f"{(full - base) / args.steps:.3f} s a step", flush=True)
if args.profile:
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(5, None)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
