"""Does this tree's detect give the same report.json as another commit's, to the last digit?

    flock /tmp/sysq-cpu.lock python scripts/check_detect_same.py --ref f0555db --n 16 --seqlen 512

The reference commit's sysq/ is exported with `git archive` into a temporary folder and run in a subprocess;
this tree's detect runs in-memory and through the sequential pipeline (one layer at a time, on --device), and in
memory with the hooks' accelerator forms (Recorder.dense, Pending.defer: what a GPU runs, here on the CPU).
report.json is compared without its `cost` section (timings); the first difference is printed. Exit code 1
when any report differs.
"""
import argparse
import json
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
    p.add_argument("--ref", default="f0555db", help="commit whose detect is the reference (default: %(default)s)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", default="wikitext2-valid")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--repo", default=str(ROOT), help="git checkout holding --ref (default: this one)")
    p.add_argument("--device", default="cpu", help="device of the sequential run (default: %(default)s)")
    args = p.parse_args()

    import sysq
    from sysq.capture import Pending, Recorder
    from sysq.detect import detect

    ref = reference(args)
    model, tok = sysq.load(args.model)
    w = sysq.windows(args.data, tok, n=args.n, seqlen=args.seqlen, seed=args.seed)
    print(f"model={args.model} data={args.data} windows={args.n}x{args.seqlen} seed={args.seed} "
          f"batch={args.batch_size} reference={args.ref}")
    print(f"  {'reference (' + args.ref + ')':28s} detect {ref.pop('cost')['wall_s']:7.1f} s")
    same = True
    for pipeline, form in (("memory", "cpu"), ("sequential", "cpu"), ("memory", "gpu")):
        # form gpu: the hooks' accelerator forms run here (whole-tensor kernels, host work at the flush)
        Recorder.dense, Pending.defer = (True, True) if form == "gpu" else (None, False)
        t = time.perf_counter()
        r = detect(model, w, tok, quiet=True, batch_size=args.batch_size, pipeline=pipeline, device=args.device)
        secs = time.perf_counter() - t
        d = json.loads(json.dumps(r.to_dict()))
        d.pop("cost")
        diff = first_difference(ref, d)
        same &= diff is None
        print(f"  {'this tree, ' + pipeline + (', GPU form' if form == 'gpu' else ''):28s} detect {secs:7.1f} s   report.json "
              + ("identical" if diff is None else f"DIFFERS at {diff}"))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
