"""The unmitigated quantization baseline on one model, in one run (FP included).

Perplexity on WikiText-2 raw test (first --windows windows of --seqlen tokens, BOS prepended) for every row,
calibration from a seeded sample of wikitext2-valid. Also:
  - which linears and which tokens set the per-tensor static activation scales of w8a8-static;
  - model size in memory (parameters + buffers: integer codes, INT4 packed) and on disk, FP vs w8a16 vs w4a16.
Writes table.md and table.json to --out (atomically).

    flock /tmp/sysq-cpu.lock python scripts/quant_table.py --out runs/quant_table
"""
import argparse
import copy
import gc
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sysq  # noqa: E402
from evaluation.perplexity import perplexity  # noqa: E402
from sysq.quant import get_recipe, model_bytes, quantize, save  # noqa: E402

ROWS = [  # (label, recipe); the hardest case and its diagnostic first, so a partial run still says the most
    ("FP", "fp"),
    ("w8a8-static (per-tensor)", "w8a8-static"),
    ("w8a8 (dynamic per-token)", "w8a8"),
    ("w8a16", "w8a16"),
    ("w4a16 g128 RTN", "w4a16"),
    ("w4a16 g128 GPTQ", "w4a16+gptq"),
    ("w4a16 per-channel", "w4a16-pc"),
    ("w4a8", "w4a8"),
    ("w4a4", "w4a4"),
    ("w8a8 + kv8", "w8a8+kv8"),
    ("w8a8 + kv4", "w8a8+kv4"),
    ("torch._int_mm real W8A8", "w8a8-int"),
    ("bitsandbytes int8 (threshold 6.0)", "bnb-int8"),
    ("bitsandbytes nf4", "bnb-nf4"),
]


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def static_scale_diagnostic(m, calib, tok, top: int = 12) -> dict:
    """Which linear inputs and which calibration tokens set the per-tensor scales of a static-quantized model."""
    rows = []
    for ref in sysq.get_adapter(m).linear_refs():
        q = ref.module
        w = q.observer.where
        tid = int(calib.ids[w["window"], w["position"]])
        rows.append(dict(linear=ref.name, layer=ref.layer, role=ref.role, absmax=q.observer.absmax,
                         scale=float(q.act_scale), window=w["window"], position=w["position"], channel=w["channel"],
                         value=w["value"], token=tok.convert_ids_to_tokens(tid)))
    rows.sort(key=lambda r: -r["absmax"])
    by_pos = {}
    for r in rows:
        key = "position 0 (BOS)" if r["position"] == 0 else ("position 1" if r["position"] == 1 else "later")
        by_pos[key] = by_pos.get(key, 0) + 1
    by_token = {}
    for r in rows:
        by_token[r["token"]] = by_token.get(r["token"], 0) + 1
    return dict(top=rows[:top], linears=len(rows), scale_set_at=by_pos,
                tokens=dict(sorted(by_token.items(), key=lambda kv: -kv[1])[:8]),
                median_absmax=sorted(r["absmax"] for r in rows)[len(rows) // 2])


def linear_bytes(model) -> int:
    total = 0
    for ref in sysq.get_adapter(model).linear_refs():
        total += sum(t.numel() * t.element_size() for t in list(ref.module.parameters()) + list(ref.module.buffers()))
    return total


def sizes(model, tok) -> list[dict]:
    """In memory (parameters + buffers; QuantLinear codes, not its speed cache) and on disk."""
    from safetensors.torch import save_file
    out = []
    with tempfile.TemporaryDirectory() as d:
        for label, rec in (("FP32", None), ("w8a16", "w8a16"), ("w4a16 g128 (packed int4)", "w4a16")):
            m = copy.deepcopy(model)
            if rec:
                quantize(m, rec, quiet=True)
                folder = save(m, Path(d) / rec, tok)
                disk = (folder / "sysq_model.safetensors").stat().st_size
            else:
                sd = {k: v.contiguous() for k, v in m.state_dict().items() if k != "lm_head.weight"}
                save_file(sd, str(Path(d) / "fp.safetensors"))
                disk = (Path(d) / "fp.safetensors").stat().st_size
            out.append(dict(model=label, memory_bytes=model_bytes(m), decoder_linear_bytes=linear_bytes(m),
                            disk_bytes=disk))
            del m
            gc.collect()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--windows", type=int, default=40)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--calib-n", type=int, default=32)
    p.add_argument("--calib-seqlen", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", default=None, help="comma-separated recipes to run (default: all rows)")
    p.add_argument("--no-extras", action="store_true", help="skip the static-scale diagnostic and the sizes")
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--device", default="cpu", help="cpu | cuda (default: %(default)s)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", message=".*inputs will be cast from.*")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)   # "inputs will be cast to float16", per call

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, tok = sysq.load(args.model, device=args.device)
    ev = sysq.windows("wikitext2", tok, n=args.windows, seqlen=args.seqlen)
    calib = sysq.calibration(tok, n=args.calib_n, seqlen=args.calib_seqlen, seed=args.seed)
    settings = dict(model=args.model, dtype="float32", eval=ev.settings(), calibration=calib.settings(),
                    torch=torch.__version__, threads=torch.get_num_threads(), device=args.device)
    print("settings:", json.dumps(settings))
    rows = ROWS if not args.rows else [(r, r) for r in args.rows.split(",")]
    results, fp_ppl, diag = [], None, None
    for label, rec in rows:
        r = get_recipe(rec)
        m = copy.deepcopy(model) if rec != "fp" else model
        t0 = time.perf_counter()
        try:
            summary = quantize(m, r, calib, quiet=args.quiet) if rec != "fp" else None
            tq = time.perf_counter() - t0
            res = perplexity(m, ev, quiet=args.quiet, model_name=args.model, recipe=rec)
        except Exception as e:   # one broken row must not lose the others
            print(f"{label:36s} FAILED: {type(e).__name__}: {e}", flush=True)
            results.append(dict(row=label, recipe=rec, description=r.describe(), error=f"{type(e).__name__}: {e}"))
            del m
            gc.collect()
            continue
        fp_ppl = res.ppl if rec == "fp" else fp_ppl
        row = dict(row=label, recipe=rec, description=r.describe(), ppl=res.ppl,
                   vs_fp=(res.ppl / fp_ppl - 1) if fp_ppl else None, quantize_s=tq, ppl_s=res.seconds,
                   memory_bytes=model_bytes(m), schemes=summary.schemes if summary else {},
                   calibrated=bool(summary and summary.calibration))
        results.append(row)
        vs = f"{row['vs_fp']:+.1%}" if row["vs_fp"] is not None else ""
        print(f"{label:36s} ppl {res.ppl:10.3f} {vs:>9s}  (quantize {tq:.0f}s, ppl {res.seconds:.0f}s)  "
              f"{r.describe()}", flush=True)
        if rec == "w8a8-static" and not args.no_extras:
            diag = static_scale_diagnostic(m, calib, tok)
        if m is not model:
            del m
            gc.collect()
        partial = dict(settings=settings, rows=results, static_scale_diagnostic=diag, sizes=None, partial=True)
        atomic_write(out / "table.json", json.dumps(partial, indent=2, default=str) + "\n")
        atomic_write(out / "table.md", markdown(partial))

    sz = None
    if diag is not None:
        print("w8a8-static: scales set at", diag["scale_set_at"], "by tokens", diag["tokens"])
        for d in diag["top"][:6]:
            print(f"  {d['linear']:40s} absmax {d['absmax']:9.2f} at window {d['window']} pos {d['position']} "
                  f"token {d['token']!r} channel {d['channel']}")
    if not args.no_extras:
        sz = sizes(model, tok)
        for s in sz:
            print(f"  size {s['model']:26s} memory {s['memory_bytes'] / 2**20:7.1f} MiB  decoder linears "
                  f"{s['decoder_linear_bytes'] / 2**20:6.1f} MiB  disk {s['disk_bytes'] / 2**20:7.1f} MiB")

    report = dict(settings=settings, rows=results, static_scale_diagnostic=diag, sizes=sz)
    atomic_write(out / "table.json", json.dumps(report, indent=2, default=str) + "\n")
    atomic_write(out / "table.md", markdown(report))
    print(f"wrote {out}/table.md and table.json")
    return 0


def markdown(rep: dict) -> str:
    s, ev, cal = rep["settings"], rep["settings"]["eval"], rep["settings"]["calibration"]
    lines = [f"# Quantization baseline (no mitigation): {s['model']}", "",
             f"Perplexity on {ev['dataset']}, first {ev['windows']} windows x {ev['seqlen']} tokens "
             f"(BOS {ev['bos']!r} prepended, {ev['tokens']} predicted tokens), {s['dtype']}. Calibration: "
             f"{cal['windows']} windows x {cal['seqlen']} of {cal['dataset']}, seed {cal['seed']}. "
             f"torch {s['torch']}, {s['threads']} threads.", "",
             "| row | recipe | perplexity | vs FP | params+buffers MiB | quantize s |", "|---|---|---:|---:|---:|---:|"]
    for r in rep["rows"]:
        if "error" in r:
            lines.append(f"| {r['row']} | {r['description']} | failed: {r['error']} | | | |")
            continue
        vs = f"{r['vs_fp']:+.1%}" if r["vs_fp"] is not None else ""
        lines.append(f"| {r['row']} | {r['description']} | {r['ppl']:.3f} | {vs} | {r['memory_bytes'] / 2**20:.1f} "
                     f"| {r['quantize_s']:.0f} |")
    d = rep.get("static_scale_diagnostic")
    if d:
        lines += ["", "## Who sets the per-tensor activation scales (w8a8-static)", "",
                  f"Of {d['linears']} linears, the largest |x| of the calibration set sits at: {d['scale_set_at']}; "
                  f"tokens: {d['tokens']}. Median per-linear abs-max {d['median_absmax']:.2f}.", "",
                  "| linear | abs-max | scale | window | position | token | channel |", "|---|---:|---:|---:|---:|---|---:|"]
        for r in d["top"]:
            lines.append(f"| {r['linear']} | {r['absmax']:.2f} | {r['scale']:.4f} | {r['window']} | {r['position']} "
                         f"| `{r['token']}` | {r['channel']} |")
    if rep.get("sizes"):
        lines += ["", "## Model size", "", "In memory: parameters + buffers (integer codes; INT4 packed two per byte; "
                  "embeddings and lm_head stay float and tied). On disk: the safetensors file.", "",
                  "| model | in memory MiB | decoder linears MiB | on disk MiB |", "|---|---:|---:|---:|"]
        for z in rep["sizes"]:
            lines.append(f"| {z['model']} | {z['memory_bytes'] / 2**20:.1f} | {z['decoder_linear_bytes'] / 2**20:.1f} "
                         f"| {z['disk_bytes'] / 2**20:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
