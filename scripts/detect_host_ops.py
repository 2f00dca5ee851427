"""detect's host work on the GPU path, counted on the CPU: aten ops and host reads per phase of a detect that runs the
accelerator's forms (Recorder.dense, Pending.defer) with the fused Triton pass in Triton's interpreter.

    SYSQ_REDUCE=triton TRITON_INTERPRET=1 python scripts/detect_host_ops.py               # ~2-4 min, 2 CPU cores

The model: a tiny random Llama (tests/tiny_models.py) with the 8B's depth (32 layers) and a planted outlier; the
windows and the batch as bench_scale.py's profile step (4 windows, batch 8: one batch, eager attention; 128 tokens,
not 512: the op counts hardly depend on the length, the interpreter's time does) and
the chunks as there (--chunk-layers 16: the 4 GiB budget holds 16 of the 8B's layers of a 4-window batch). Only the
host side is comparable with the GPU's table (results/h200/s7/e7b/detect-b8/profile-8b.txt): `ops` are aten ops
called from Python (about one launch each on a GPU, ~20-30 us of host time there); the Triton launches are counted
apart (`triton`: their interpreter's own torch calls are left out) and CUDA calls (memcpy, syncs) do not exist here.
`host copies` counts the device-to-host copies (capture.start_to_host: one per device and dtype on a GPU) and
`waits` the points where the host waits for one (the event syncs of the GPU's table).
"""
import argparse
import contextlib
import os
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "tests")]

import torch  # noqa: E402
from torch.profiler import profile, record_function  # noqa: E402

import sysq  # noqa: E402
from sysq import capture  # noqa: E402

import detect_profile as dp  # noqa: E402

LAUNCH = "triton:launch"
ACTIVE: list = []           # the profiler running (its collection is off inside a Triton launch)
COLS = ("ops", "triton", "host copies", "waits", "aten::item", "aten::nonzero", "aten::index", "aten::select",
        "aten::to", "aten::copy_", "aten::cat", "aten::stack")


@contextlib.contextmanager
def instrumented(counts: Counter):
    """Label each Triton launch (its interpreter's torch calls are not the GPU's host work) and count the host
    copies (start_to_host's groups) and the waits for them (Event.synchronize, or the whole copy on the CPU)."""
    from sysq import _reduce_triton as R
    launch, start, to_host, step = R.launch, capture.start_to_host, capture.to_host, capture.Backlog.step

    def labelled_launch(*a, **k):
        with record_function(LAUNCH):
            for prof in ACTIVE:
                prof.toggle_collection_dynamic(False, [torch.profiler.ProfilerActivity.CPU])
            try:
                return launch(*a, **k)
            finally:
                for prof in ACTIVE:
                    prof.toggle_collection_dynamic(True, [torch.profiler.ProfilerActivity.CPU])

    def counted_start(tensors, numpy=False):
        groups = {(t.device, t.dtype) for t in tensors if t is not None}     # here every tensor stands for a device's
        with record_function(f"host_copies:{len(groups)}"):
            return start(tensors, numpy)

    def counted_to_host(tensors, numpy=False):
        with record_function("wait"):
            return to_host(tensors, numpy)

    def counted_step(self, n=None):
        if self.events or not getattr(self, "_waited", False):
            self._waited = True
            with record_function("wait"):
                pass
        return step(self, n)

    R.launch, capture.start_to_host, capture.to_host, capture.Backlog.step = \
        labelled_launch, counted_start, counted_to_host, counted_step
    try:
        yield
    finally:
        R.launch, capture.start_to_host, capture.to_host, capture.Backlog.step = launch, start, to_host, step


def _under(e, prefix: str) -> bool:
    p = e.cpu_parent
    while p is not None:
        if p.name.startswith(prefix):
            return True
        p = p.cpu_parent
    return False


def count(model, ids, batch_size: int):
    """(counts {phase: Counter}, CPU seconds {phase: s})."""
    tally = Counter()
    with instrumented(tally), dp.phases(), profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        ACTIVE.append(prof)
        try:
            sysq.detect(model, ids, quiet=True, batch_size=batch_size)
        finally:
            ACTIVE.clear()
    counts = {p: Counter() for p in dp.PHASES}
    seconds = dict.fromkeys(dp.PHASES, 0.0)
    events = prof.events()
    seconds["rest"] = (max(e.time_range.end for e in events) - min(e.time_range.start for e in events)) / 1e6
    seconds.update(flush_in_run=0.0, records_in_run=0.0, records_in_flush=0.0)
    for e in events:
        ph = dp._phase(e)
        if e.name.startswith("phase:"):
            name = e.name[len("phase:"):]
            seconds[name] += e.cpu_time_total / 1e6
            if ph != "rest":
                seconds[f"{name}_in_{'run' if ph == 'forward' else ph}"] += e.cpu_time_total / 1e6
        elif e.name == LAUNCH:
            counts[ph]["triton"] += 1
            seconds[f"launch_{ph}"] = seconds.get(f"launch_{ph}", 0.0) + e.cpu_time_total / 1e6
        elif e.name.startswith("host_copies:"):
            counts[ph]["host copies"] += int(e.name.split(":")[1])
        elif e.name == "wait":
            counts[ph]["waits"] += 1
        elif e.name.startswith("aten::") and not _under(e, LAUNCH):
            counts[ph][e.name] += 1
            if dp._top_level(e):
                counts[ph]["ops"] += 1
    seconds["rest"] -= seconds["forward"] + seconds["flush"] - seconds["flush_in_run"]
    seconds["forward"] -= seconds["flush_in_run"] + seconds["records_in_run"]
    seconds["flush"] -= seconds["records_in_flush"]
    for ph in dp.PHASES:                    # the interpreter's time is not the GPU's host work
        seconds[ph] -= seconds.get(f"launch_{ph}", 0.0)
    return counts, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("--seqlen", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--chunk-layers", type=int, default=16, help="layers per chunk (sets capture.CHUNK_BYTES)")
    p.add_argument("--warmup", action="store_true", help="a detect first (the CPU seconds of the first run)")
    args = p.parse_args()
    if not (os.environ.get("SYSQ_REDUCE") == "triton" and os.environ.get("TRITON_INTERPRET") == "1"):
        p.error("run with SYSQ_REDUCE=triton TRITON_INTERPRET=1 (the fused path in Triton's interpreter)")
    from tiny_models import plant_bos_outlier, tiny_model
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = plant_bos_outlier(tiny_model("llama", layers=args.layers, max_position_embeddings=args.seqlen))
    ids = torch.randint(3, model.config.vocab_size, (args.windows, args.seqlen),
                        generator=torch.Generator().manual_seed(0))
    ids[:, 0] = 1
    capture.Recorder.dense, capture.Pending.defer = True, True       # what a GPU runs
    assert capture.fused("cpu")
    n = args.chunk_layers       # a chunk closes once it holds n layers' bytes (the 8B's 4 GiB budget: 16 layers)
    capture.Recorder._budget = lambda self, device: (self._chunk_bytes // len(self._chunk)) * n if self._chunk \
        else capture.CHUNK_BYTES
    sysq.detect(model, ids[:1, :16], quiet=True, attention=False, snapshot=False) if args.warmup else None
    counts, seconds = count(model, ids, args.batch_size)
    plain = dp.profile_forward(model, ids, args.batch_size)
    batches = -(-args.windows // args.batch_size)
    print(f"tiny llama, {args.layers} layers; {args.windows} windows x {args.seqlen}, batch {args.batch_size} "
          f"({batches} batches), chunks of {args.chunk_layers} layers; fused={capture.fused('cpu')}; per batch "
          f"(rest: per detect)")
    print(dp.table(counts, seconds, batches, plain, COLS))


if __name__ == "__main__":
    main()
