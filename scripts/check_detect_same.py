"""Does this tree's detect give the same report.json as another commit's, to the last digit?

    flock /tmp/sysq-cpu.lock python scripts/check_detect_same.py --ref f0555db --n 16 --seqlen 512
    python3 scripts/check_detect_same.py --ref this --skip-sequential --gpu cuda     # on a GPU machine

The reference commit's sysq/ is exported with `git archive` into a temporary folder and run in a subprocess;
this tree's detect runs in-memory and through the sequential pipeline (one layer at a time, on --device), and in
memory with the hooks' accelerator forms (Recorder.dense, Pending.defer: what a GPU runs, here on the CPU).
report.json is compared without its `cost` section (timings); the first difference is printed. Exit code 1
when any report differs.

--gpu cuda (on a GPU machine) adds three runs:
  * the CPU forward with the hooks' tensors copied to the GPU and reduced there (Recorder.reduce_on) by the fused
    Triton pass, then by the torch form (SYSQ_REDUCE=torch): the CPU form's activations to the bit, so the report
    must equal the reference;
  * the model on the GPU, the fused pass against the torch form (the GPU's activations: these two are compared
    with each other, not with the CPU reference, whose forward rounds differently).
The float32 sums (mean |x|: `mean_abs`, `channel_absmean`) add in another order on the GPU and in the fused pass;
such fields are listed apart ("identical except sums": how many values differ and by how much).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUN = """
import json, sys, time
import sysq
from sysq.detect import detect
model, tok = sysq.load({model!r})
w = sysq.windows({data!r}, tok, n={n}, seqlen={seqlen}, seed={seed})
t = time.perf_counter()
r = detect(model, w, tok, quiet=True, batch_size={batch})
d = r.to_dict()
d["cost"] = {{"wall_s": time.perf_counter() - t}}
open(sys.argv[1], "w").write(json.dumps(d))
"""


def first_difference(a, b, path="") -> str | None:
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        if list(a) != list(b):
            return f"{path}: keys {list(a)[:8]} vs {list(b)[:8]}"
        for k in a:
            d = first_difference(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    if a != a and b != b:        # NaN
        return None
    return None if a == b else f"{path}: {a!r} vs {b!r}"


SUMS = (".mean_abs", ".channel_absmean[")       # made of float32 sums: the order of addition shows in the last bits


def compare(a, b) -> str:
    """'identical', 'identical except sums (...)' or 'DIFFERS at <first difference outside the sums>'. A site's `top`
    list (the largest token maxima) counts as the same when its values are: which of several equal maxima it names is
    a tie rule (since the eleventh session: by window and position), and is counted apart."""
    sums, ties = [], []

    def walk(x, y, path):
        if any(k in path for k in SUMS) and isinstance(x, float) and isinstance(y, float):
            if x != y:
                sums.append(abs(x - y) / max(abs(x), abs(y)))
            return None
        if path.endswith(".top") and isinstance(x, list) and isinstance(y, list) and x != y:
            if [r["value"] for r in x] == [r["value"] for r in y]:
                ties.append(path)
                return None
        if isinstance(x, dict) and isinstance(y, dict) and list(x) == list(y):
            return next((d for k in x if (d := walk(x[k], y[k], f"{path}.{k}"))), None)
        if isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            return next((d for i, (u, v) in enumerate(zip(x, y)) if (d := walk(u, v, f"{path}[{i}]"))), None)
        return first_difference(x, y, path)
    diff = walk(a, b, "")
    if diff:
        return f"DIFFERS at {diff}"
    notes = ([f"sums ({len(sums)} values, max rel diff {max(sums):.1e})"] if sums else []) + \
        ([f"which of equal maxima {len(ties)} top lists name"] if ties else [])
    return "identical" if not notes else "identical except " + "; ".join(notes)


def reference(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tar = subprocess.run(["git", "-C", args.repo, "archive", args.ref, "sysq"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=tar.stdout, check=True)
        out = Path(tmp) / "report.json"
        code = RUN.format(model=args.model, data=args.data, n=args.n, seqlen=args.seqlen, seed=args.seed,
                          batch=args.batch_size)
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, cwd=tmp,
                       env={**__import__("os").environ, "PYTHONPATH": tmp})
        return json.loads(out.read_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ref", default="f0555db", help="commit whose detect is the reference (default: %(default)s); "
                   "'this': this tree's in-memory CPU run (no git history needed, as on a device machine)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", default="wikitext2-valid")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--repo", default=str(ROOT), help="git checkout holding --ref (default: this one)")
    p.add_argument("--device", default="cpu", help="device of the sequential run (default: %(default)s)")
    p.add_argument("--gpu", default=None, help="a CUDA device: also the GPU's forms (see above)")
    p.add_argument("--skip-sequential", action="store_true", help="leave out the sequential run")
    args = p.parse_args()

    import sysq
    from sysq.capture import Pending, Recorder
    from sysq.detect import detect

    ref = None if args.ref == "this" else reference(args)
    model, tok = sysq.load(args.model)
    w = sysq.windows(args.data, tok, n=args.n, seqlen=args.seqlen, seed=args.seed)
    print(f"model={args.model} data={args.data} windows={args.n}x{args.seqlen} seed={args.seed} "
          f"batch={args.batch_size} reference={args.ref}")
    if ref is not None:
        print(f"  {'reference (' + args.ref + ')':28s} detect {ref.pop('cost')['wall_s']:7.1f} s")
    same = True

    def run(label, pipeline="memory", dense=None, defer=False, reduce_on=None, reduce="auto", m=model):
        Recorder.dense, Pending.defer, Recorder.reduce_on = dense, defer, reduce_on
        os.environ["SYSQ_REDUCE"] = reduce
        try:
            t = time.perf_counter()
            r = detect(m, w, tok, quiet=True, batch_size=args.batch_size, pipeline=pipeline, device=args.device)
            secs = time.perf_counter() - t
        finally:
            Recorder.dense, Pending.defer, Recorder.reduce_on = None, False, None
            os.environ.pop("SYSQ_REDUCE", None)
        d = json.loads(json.dumps(r.to_dict()))
        d.pop("cost")
        return label, secs, d

    runs = [run("memory"), None if args.skip_sequential else run("sequential", "sequential"),
            # the hooks' accelerator forms here (whole-tensor kernels, host work at the flush)
            run("memory, GPU form", dense=True, defer=True)]
    if args.gpu:
        runs += [run(f"CPU forward, {args.gpu} fused", reduce_on=args.gpu),
                 run(f"CPU forward, {args.gpu} torch", reduce_on=args.gpu, reduce="torch")]
    if ref is None:                                   # --ref this: the first run (in memory, CPU form) is it
        ref = runs[0][2]
        print(f"  {'reference: this tree, memory':34s} detect {runs[0][1]:7.1f} s")
        runs = runs[1:]
    for label, secs, d in filter(None, runs):
        verdict = compare(ref, d)
        same &= verdict == "identical"
        print(f"  {'this tree, ' + label:34s} detect {secs:7.1f} s   report.json {verdict}")
    if args.gpu:
        import torch
        gm = model.to(args.gpu)
        (la, sa, a), (lb, sb, b) = run("fused", m=gm), run("torch form", reduce="torch", m=gm)
        verdict = compare(b, a)
        same &= verdict == "identical"
        print(f"  {'model on ' + args.gpu + ': fused':34s} detect {sa:7.1f} s   against the torch form ({sb:.1f} s): "
              f"{verdict}" + (f"; peak {torch.cuda.max_memory_allocated(args.gpu) / 2**30:.2f} GiB"
                              if torch.device(args.gpu).type == "cuda" else ""))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
