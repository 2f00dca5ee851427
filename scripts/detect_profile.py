"""Where detect's host round trips happen: calls of the ops that read device values, per phase of detect.

    python scripts/detect_profile.py --model tiny --layers 8 --n 8 --seqlen 128 --dense          # seconds
    flock /tmp/sysq-cpu.lock python scripts/detect_profile.py --model smollm2-135m --n 4 --seqlen 512 --dense

Phases: `forward` (the model's forward passes with the capture hooks: on a GPU, any read of a device value here
stalls the launch queue), `records` (the host making a batch's records from its host copy, during the next
batch's forward; reads there are of host tensors), `flush` (the batch's reductions folded in and copied to the
host; once per batch before the records overlapped the forward), `rest` (weight statistics, rounding, the
report). The first row is a plain forward of the same batches (no hooks, the model's own attention kernel): the
hooks' share of `forward` is the difference. `ops` counts aten ops called from Python (not those inside another
aten op): on a GPU about one kernel launch, or one host op, each. --dense runs the accelerator's
whole-tensor forms of the hooks on the CPU (what a GPU runs). scripts/bench_scale.py's profile step prints the
same table on a GPU. Counts are per batch of --batch-size windows.
"""
import argparse
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

import sysq  # noqa: E402
from sysq import capture  # noqa: E402
from sysq.capture import Recorder  # noqa: E402

# ops that read a device value on the host (item, tolist, bool() of a tensor, data-dependent shapes) or copy
WATCH = ("aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::index", "aten::masked_select",
         "aten::to", "aten::_to_copy", "aten::copy_", "cudaMemcpyAsync", "cudaStreamSynchronize",
         "cudaDeviceSynchronize", "cudaEventSynchronize")
PHASES = ("forward", "records", "flush", "rest")


@contextlib.contextmanager
def phases():
    """Recorder.run's forward, Recorder.flush and the host records (Backlog.step, where it exists) labelled for the
    profiler (works on any commit's sysq)."""
    run, flush = Recorder.run, Recorder.flush
    backlog = getattr(capture, "Backlog", None)
    step = backlog.step if backlog else None

    def labelled_step(self, *a, **k):
        with record_function("phase:records"):
            return step(self, *a, **k)
    if backlog:
        backlog.step = labelled_step

    def labelled_run(self, *a, **k):
        with record_function("phase:forward"):
            return run(self, *a, **k)

    def labelled_flush(self, *a, **k):
        with record_function("phase:flush"):
            return flush(self, *a, **k)

    Recorder.run, Recorder.flush = labelled_run, labelled_flush
    try:
        yield
    finally:
        Recorder.run, Recorder.flush = run, flush
        if backlog:
            backlog.step = step


def _top_level(e) -> bool:
    """An aten op called from Python (no aten op above it): what the dispatcher pays for, and on a GPU about one
    kernel launch each."""
    p = e.cpu_parent
    while p is not None:
        if p.name.startswith("aten::"):
            return False
        p = p.cpu_parent
    return True


def _phase(e) -> str:
    p = e.cpu_parent
    while p is not None:            # the innermost label wins: flush runs inside run
        if p.name.startswith("phase:"):
            return p.name[len("phase:"):]
        p = p.cpu_parent
    return "rest"


def profile_detect(model, ids, batch_size: int, **kw):
    """Profile one sysq.detect: (counts {phase: {op: calls}}, CPU seconds {phase: s}, the profiler)."""
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with phases(), profile(activities=acts) as prof:
        sysq.detect(model, ids, quiet=True, batch_size=batch_size, **kw)
    counts = {p: dict.fromkeys(("ops",) + WATCH, 0) for p in PHASES}
    seconds = dict.fromkeys(PHASES, 0.0)
    events = prof.events()
    seconds["rest"] = (max(e.time_range.end for e in events) - min(e.time_range.start for e in events)) / 1e6
    seconds.update(flush_in_run=0.0, records_in_run=0.0, records_in_flush=0.0)
    for e in events:
        if e.name.startswith("phase:"):
            name = e.name[len("phase:"):]
            seconds[name] += e.cpu_time_total / 1e6
            outer = _phase(e)                       # phases nest: records in forward or flush, flush in run
            if outer != "rest":
                seconds[f"{name}_in_{'run' if outer == 'forward' else outer}"] += e.cpu_time_total / 1e6
        elif e.name.startswith("aten::") or e.name in WATCH:
            c = counts[_phase(e)]
            if e.name in WATCH:
                c[e.name] += 1
            if e.name.startswith("aten::") and _top_level(e):
                c["ops"] += 1
    seconds["rest"] -= seconds["forward"] + seconds["flush"] - seconds["flush_in_run"]
    seconds["forward"] -= seconds["flush_in_run"] + seconds["records_in_run"]
    seconds["flush"] -= seconds["records_in_flush"]
    return counts, seconds, prof


@torch.no_grad()
def profile_forward(model, ids, batch_size: int):
    """The plain forward's row (no hooks, the model's own attention kernel): (counts per batch, CPU s per batch), to
    set beside detect's forward phase (the hooks' share is the difference)."""
    base = getattr(model, "base_model", model)
    dev = next(model.parameters()).device
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    starts = range(0, len(ids), batch_size)
    base(input_ids=ids[:1, :16].to(dev), use_cache=False)                   # warm-up
    with profile(activities=acts) as prof:
        for s in starts:
            with record_function("phase:plain"):
                base(input_ids=ids[s:s + batch_size].to(dev), use_cache=False)
    counts = dict.fromkeys(("ops",) + WATCH, 0)
    secs = 0.0
    for e in prof.events():
        if e.name == "phase:plain":
            secs += e.cpu_time_total / 1e6
        elif e.name.startswith("aten::") or e.name in WATCH:
            if e.name in WATCH:
                counts[e.name] += 1
            if e.name.startswith("aten::") and _top_level(e):
                counts["ops"] += 1
    return {k: v / len(starts) for k, v in counts.items()}, secs / len(starts)


def table(counts: dict, seconds: dict, batches: int, plain: tuple | None = None, names=None) -> str:
    """Calls per batch in each phase (rest: per detect), and the phase's CPU seconds; ops: aten ops called from
    Python (about one kernel launch each on a GPU). plain: profile_forward's row, printed first. names: the columns
    (default: ops and the WATCH ops that ran)."""
    names = names or ["ops"] + [k for k in WATCH if any(counts[p][k] for p in PHASES)]
    head = "| phase | CPU s | " + " | ".join(k.split("::")[-1] for k in names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 2)]
    if plain is not None:
        lines.append(f"| plain forward / batch | {plain[1]:.3f} | " + " | ".join(f"{plain[0].get(k, 0):g}" for k in names)
                     + " |")
    for p in PHASES:
        per = batches if p != "rest" else 1
        lines.append(f"| {p}{' / batch' if p != 'rest' else ''} | {seconds[p] / per:.3f} | "
                     + " | ".join(f"{counts[p][k] / per:g}" for k in names) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny", help="a sysq model name, or 'tiny' (a random llama)")
    p.add_argument("--layers", type=int, default=8, help="decoder layers of the tiny llama")
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--dense", action="store_true", help="the accelerator's whole-tensor hook forms")
    p.add_argument("--chunk-mib", type=float, default=None,
                   help="dense forms: activations kept for a chunk of layers (sysq.capture.CHUNK_BYTES)")
    args = p.parse_args()
    if args.chunk_mib is not None:
        capture.CHUNK_BYTES = int(args.chunk_mib * 2**20)
    if args.model == "tiny":
        from transformers import LlamaConfig, LlamaForCausalLM
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128,
                                             num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=args.seqlen, bos_token_id=1)).eval()
        ids = torch.randint(3, 512, (args.n, args.seqlen), generator=torch.Generator().manual_seed(0))
        ids[:, 0] = 1
    else:
        model, tok = sysq.load(args.model)
        ids = sysq.windows("wikitext2-valid", tok, n=args.n, seqlen=args.seqlen, seed=0).ids
    if args.dense:        # what a GPU runs: whole-tensor forms, and the host work waits for the flush's copy
        from sysq.capture import Pending
        Recorder.dense = True
        if hasattr(Pending, "defer"):
            Pending.defer = True
        else:                                                         # commits before Pending.defer
            Pending.add = lambda self, fn, *tensors: self.items.append((fn, tensors))
    sysq.detect(model, ids[:1, :16], quiet=True)                      # warm-up
    cost = sysq.detect(model, ids, quiet=True, batch_size=args.batch_size).cost
    counts, seconds, _ = profile_detect(model, ids, args.batch_size)
    plain = profile_forward(model, ids, args.batch_size)
    batches = -(-args.n // args.batch_size)
    print(f"model={args.model} windows={args.n} seqlen={args.seqlen} batch={args.batch_size} dense={args.dense} "
          f"threads={torch.get_num_threads()}" + (f" chunks: up to {cost['chunk_layers']} layers holding "
                                                   f"{cost['chunk_bytes'] / 2**20:.1f} MiB" if "chunk_layers" in cost
                                                   else ""))
    print(table(counts, seconds, batches, plain))


if __name__ == "__main__":
    main()
