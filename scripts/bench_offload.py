"""Host memory and time of the sequential pipeline with and without disk offload (sysq.load(..., offload=DIR)).

    python scripts/bench_offload.py --config small --device cpu                 # any machine, about a minute
    python scripts/bench_offload.py --config 8b --layers 8 --device cuda --offload /scratch/layers

Builds a Llama-shaped model with random weights and the planted outlier (scripts/bench_scale.py), writes it as a
float safetensors folder, then runs the same steps twice, each in a fresh process so that the peak RSS is its
own: "memory" loads the folder whole (the weights on the host), "offload" loads it with offload=DIR (each
decoder layer in a file, read one at a time). Steps: load, detect, static (w8a8-static scales and RTN codes)
or gptq (w4a16+gptq), save (sysq.save of the quantized model); all sequential on --device. Per step: seconds
and peak host RSS (VmHWM, reset before the step), and peak GPU memory. Then both saved folders are compared
(every tensor equal). Table to stdout and $OUT/offload-<config>.md / .json (default out/).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import bench_scale  # noqa: E402
import sysq  # noqa: E402

# a CPU-sized Llama: a layer is 61 MiB in float32, the embeddings and head 64 MiB
bench_scale.CONFIGS.setdefault("small", dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=8,
                                             num_attention_heads=16, num_key_value_heads=4, head_dim=64,
                                             vocab_size=8192, bos_token_id=1, eos_token_id=2,
                                             max_position_embeddings=2048))


def child(args) -> dict:
    """One run (args.mode) in this process: the rows of its steps."""
    from sysq.sequential import tensor_bytes
    rows = {}
    seq = dict(quiet=True, pipeline="sequential", device=args.device)
    ids = bench_scale.windows(type("C", (), {"vocab_size": args.vocab, "bos_token_id": 1})(), args.windows,
                              args.seqlen)

    def step(name, fn):
        with bench_scale.Meter() as m:
            out = fn()
        rows[name] = {"s": m.seconds, "host_gib": m.host / 2**30 if m.host else None,
                      "gpu_gib": m.gpu / 2**30 if m.gpu else None}
        print(f"  {args.mode:8s} {name:7s} {m.seconds:8.2f} s  host peak {rows[name]['host_gib'] or 0:.3f} GiB",
              flush=True)
        return out

    offload = args.offload if args.mode == "offload" else None
    model, _ = step("load", lambda: sysq.load(args.folder, dtype=args.dtype, offload=offload))
    rows["load"]["in_memory_gib"] = tensor_bytes(model, mapped=False) / 2**30
    if "detect" in args.steps:
        step("detect", lambda: sysq.detect(model, ids, attention=False, **seq))
    recipe = "w4a16+gptq" if "gptq" in args.steps else "w8a8-static"
    step("quantize", lambda: sysq.quantize(model, recipe, ids, **seq))
    if "save" in args.steps:
        step("save", lambda: sysq.save(model, Path(args.work) / f"saved-{args.mode}"))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="small", choices=sorted(bench_scale.CONFIGS))
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on a GPU, float32 on the CPU")
    p.add_argument("--steps", default="detect,static,save", help="detect, static | gptq, save")
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("--seqlen", type=int, default=128)
    p.add_argument("--offload", default=None, help="folder for the layer files (default: a temporary one)")
    p.add_argument("--out", default=os.environ.get("OUT", "out"))
    p.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    p.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    p.add_argument("--vocab", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    if args.mode:                                     # a child run
        print("ROWS " + json.dumps(child(args)), flush=True)
        return
    work = Path(tempfile.mkdtemp(prefix="bench-offload-"))
    try:
        t = time.perf_counter()
        model = bench_scale.build(args.config, args.layers, "cpu", sysq.models.parse_dtype(args.dtype))
        model.save_pretrained(work / "float")
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from conftest import make_tokenizer                  # sysq.load wants a tokenizer beside the weights
        make_tokenizer().save_pretrained(work / "float")
        vocab, layers = model.config.vocab_size, model.config.num_hidden_layers
        sizes = bench_scale.weights(model, layers)
        del model
        print(f"{args.config} ({layers} layers, {args.dtype}): weights {sizes['weights_gib']:.3f} GiB, one layer "
              f"{sizes['layer_gib']:.3f} GiB, outside the layers {sizes['outside_gib']:.3f} GiB "
              f"(built and written in {time.perf_counter() - t:.1f} s)", flush=True)
        rows = {}
        for mode in ("memory", "offload"):
            cmd = [sys.executable, __file__, "--mode", mode, "--folder", str(work / "float"), "--work", str(work),
                   "--vocab", str(vocab), "--device", args.device, "--dtype", args.dtype, "--steps", args.steps,
                   "--windows", str(args.windows), "--seqlen", str(args.seqlen),
                   "--offload", args.offload or str(work / "layers")]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"the {mode} run failed:\n{out.stderr[-3000:]}")
            print("\n".join(line for line in out.stdout.splitlines() if not line.startswith("ROWS")), flush=True)
            rows[mode] = json.loads(next(line[5:] for line in out.stdout.splitlines() if line.startswith("ROWS")))
        same = None
        if "save" in args.steps:
            (a, _), (b, _) = (sysq.load(work / f"saved-{m}") for m in ("memory", "offload"))
            sa, sb = a.state_dict(), b.state_dict()
            same = sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
        lines = [f"# Disk offload: {args.config} ({layers} layers, {args.dtype}), sequential on {args.device}, "
                 f"{args.windows} x {args.seqlen} windows", "",
                 f"weights {sizes['weights_gib']:.3f} GiB, one layer {sizes['layer_gib']:.3f} GiB, outside the "
                 f"layers {sizes['outside_gib']:.3f} GiB", "",
                 "| step | s (memory) | s (offload) | host peak GiB (memory) | host peak GiB (offload) | "
                 "GPU peak GiB (offload) |", "|---|---|---|---|---|---|"]
        for name in rows["memory"]:
            m, o = rows["memory"][name], rows["offload"][name]
            lines.append(f"| {name} | {m['s']:.2f} | {o['s']:.2f} | {m['host_gib'] or 0:.3f} | "
                         f"{o['host_gib'] or 0:.3f} | {o['gpu_gib'] or 0:.3f} |")
        lines += ["", f"tensors in host memory after load: memory {rows['memory']['load']['in_memory_gib']:.3f} GiB, "
                  f"offload {rows['offload']['load']['in_memory_gib']:.3f} GiB"]
        if same is not None:
            lines.append(f"saved folders equal, tensor by tensor: {same}")
        text = "\n".join(lines)
        print(text)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"offload-{args.config}.md").write_text(text + "\n")
        (out / f"offload-{args.config}.json").write_text(json.dumps({"settings": vars(args), "sizes": sizes,
                                                                     "rows": rows, "saved_equal": same}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
