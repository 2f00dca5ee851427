#!/usr/bin/env python
"""Where W4A4+KV4's perplexity loss comes from (issue 15), on SmolLM2, in one run.

The model is mitigated once with RECIPE@METHOD (default w4a4+g64+kv4, the rules: rotation with the online down_proj
Hadamard, smoothing, weight clipping, preserved tokens); each cell then quantizes a copy of that mitigated model with
one part of the recipe on (weights W4, activations A4, the KV cache KV4), or with one variant of a part (activation
groups, clip ratios, activations of one role only, the BOS token's keys and values kept float, ...), and measures
perplexity on NW windows of WikiText-2 test. Weights get the plan's rounding (GPTQ under the rules; the learned cell
costs minutes on the CPU).

    NW=8 flock /tmp/sysq-cpu.lock python scripts/int4_error_split.py --out results/int4-split
    ... --cells a4,kv4,a4-down              # some cells only; --list prints them all

Writes OUT/split.json and OUT/split.md; resumable (cells already there with the same settings are skipped). The
outlier report is cached as int4_probe caches it ($PROBE_CACHE, /tmp/int4b).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sysq  # noqa: E402
from evaluation.perplexity import perplexity  # noqa: E402
from sysq.io import atomic_write_text  # noqa: E402
from sysq.mitigate.api import mitigate, plan  # noqa: E402
from sysq.quant import quantize  # noqa: E402
from sysq.quant.recipes import KVSpec, Recipe  # noqa: E402

log = logging.getLogger("int4_error_split")
ROLES = ("q", "k", "v", "o", "gate", "up", "down")
INPUTS = (("q", "k", "v"), ("o",), ("gate", "up"), ("down",))      # the four distinct linear inputs of a layer


def _act(r: Recipe, **kw) -> Recipe:
    return dataclasses.replace(r, act=dataclasses.replace(r.act, **kw))


def _only(r: Recipe, part: str, searched_clip: bool = False) -> Recipe:
    """r with only one of weights / act / kv on (and without the plan's per-linear activation clip ratios unless
    `searched_clip`)."""
    keep = {"w": ("weight",), "a": ("act",), "kv": ("kv",), "a+kv": ("act", "kv"), "all": ("weight", "act", "kv")}[part]
    kw = {k: (getattr(r, k) if k in keep else None) for k in ("weight", "act", "kv")}
    kw["act_clip_ratios"] = dict(r.act_clip_ratios) if searched_clip and "act" in keep else {}
    if "weight" not in keep:
        kw.update(method="rtn", preserve_channels={}, preserve_channels_bits=None)
    return dataclasses.replace(r, **kw)


# name -> (what it isolates, r -> the cell's recipe)
CELLS = {
    "all": ("W4 (the plan's GPTQ) + A4 + KV4: the recipe with the plan", lambda r: _only(r, "all")),
    "w4": ("W4 weights only (GPTQ)", lambda r: _only(r, "w")),
    "w4-learned": ("W4 weights only, learned rounding (the recipe's budget)",
                   lambda r: dataclasses.replace(_only(r, "w"), method="learned")),
    "a4": ("A4 activations only (dynamic per token, preserved tokens float)", lambda r: _only(r, "a")),
    "kv4": ("KV4 only (asymmetric per head and token)", lambda r: _only(r, "kv")),
    "a4+kv4": ("A4 and KV4, float weights", lambda r: _only(r, "a+kv")),
    "a4+kv4-clipsearch": ("A4 and KV4, float weights, the searched clip ratios", lambda r: _only(r, "a+kv", True)),
    **{f"a4-{'' .join(rs)}": (f"A4 on the {'/'.join(rs)} input only", (lambda rs: lambda r: dataclasses.replace(
        _only(r, "a"), skip=tuple(x for x in ROLES if x not in rs)))(rs)) for rs in INPUTS},
    "a4-no-keep": ("A4 with no token preserved (BOS / outlier tokens quantized too)",
                   lambda r: _act(_only(r, "a"), preserve_threshold=None, preserve_positions=())),
    "a4-ag64": ("A4 in groups of 64 channels per token (Atom; MXFP4/NVFP4-style grouped scales)",
                lambda r: dataclasses.replace(_act(_only(r, "a"), granularity="group", group_size=64), ragged="halve")),
    "a4-ag32": ("A4 in groups of 32 channels per token",
                lambda r: dataclasses.replace(_act(_only(r, "a"), granularity="group", group_size=32), ragged="halve")),
    "a4-asym": ("A4 asymmetric per token", lambda r: _act(_only(r, "a"), symmetric=False)),
    **{f"a4-clip{c}": (f"A4 with every dynamic range shrunk to {c}", (lambda c: lambda r: _act(
        _only(r, "a"), clip_ratio=c))(c)) for c in (0.95, 0.9, 0.85, 0.8)},
    "a4-clipsearch": ("A4 with the plan's clip ratio per linear (searched on output error)",
                      lambda r: _only(r, "a", searched_clip=True)),
    "all-clipsearch": ("W4 (GPTQ) + A4 + KV4 with the searched clip ratios", lambda r: _only(r, "all", True)),
    "kv4-keep0": ("KV4 with the first token's keys and values float (PrefixQuant / IntactKV)",
                  lambda r: dataclasses.replace(_only(r, "kv"), kv=dataclasses.replace(r.kv, preserve_positions=(0,)))),
    "kv4-g32": ("KV4 in groups of 32 of head_dim", lambda r: dataclasses.replace(
        _only(r, "kv"), kv=dataclasses.replace(r.kv, group_size=32))),
    "kv4-g32-keep0": ("KV4 g32 with the first token float", lambda r: dataclasses.replace(
        _only(r, "kv"), kv=dataclasses.replace(r.kv, group_size=32, preserve_positions=(0,)))),
    "kv4-sym": ("KV4 symmetric", lambda r: dataclasses.replace(_only(r, "kv"),
                                                              kv=dataclasses.replace(r.kv, symmetric=True))),
}


def best(r: Recipe, res: dict, ag: int | None = None) -> Recipe:
    """The whole recipe with learned rounding and each measured option that lowered its part's perplexity in this run
    (cells a4 / a4-clipsearch, kv4 / kv4-keep0 must be measured first); `ag`: activation groups of that size."""
    ppl = {k: v["ppl"] for k, v in res["ppl"].items()}
    clip = ppl.get("a4-clipsearch", 1e9) < ppl.get("a4", 0)
    keep0 = ppl.get("kv4-keep0", 1e9) < ppl.get("kv4", 0)
    out = dataclasses.replace(_only(r, "all", searched_clip=clip), method="learned")
    if keep0:
        out = dataclasses.replace(out, kv=dataclasses.replace(r.kv, preserve_positions=(0,)))
    if ag:
        out = dataclasses.replace(_act(out, granularity="group", group_size=ag), ragged="halve")
    return out


BEST = {"best-learned": ("learned rounding, with the clip ratios / KV keep measured better in this run", None),
        "best-learned-ag64": ("... and A4 in groups of 64 (a different activation format)", 64)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="w4a4+g64+kv4")
    ap.add_argument("--method", default="auto-fast", help="mitigation plan (the rules by default)")
    ap.add_argument("--cells", default="all,w4,a4,kv4,a4+kv4," + ",".join(f"a4-{''.join(x)}" for x in INPUTS)
                    + ",a4-no-keep,a4-ag64,a4-ag32,a4-clip0.9,a4-clipsearch,kv4-keep0,kv4-g32")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--calib-n", type=int, default=8)
    ap.add_argument("--out", default="out/int4-split")
    args = ap.parse_args()
    if args.list:
        for k, (what, _) in {**CELLS, **BEST}.items():
            print(f"{k:16s} {what}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("sysq").setLevel(logging.WARNING)
    nw, off = int(os.environ.get("NW", 8)), int(os.environ.get("OFF", 0))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"recipe": args.recipe, "method": args.method, "windows": nw, "offset": off, "calib_n": args.calib_n,
                "seqlen": 512, "device": "cpu", "dtype": "float32"}
    jpath = out / "split.json"
    res = json.loads(jpath.read_text()) if jpath.exists() else {}
    if res.get("settings") != settings:
        res = {"settings": settings, "ppl": {}}

    def save():
        atomic_write_text(jpath, json.dumps(res, indent=1))
        atomic_write_text(out / "split.md", markdown(res))

    base, tok = sysq.load("smollm2-135m")
    win = sysq.windows("wikitext2", tok, n=nw, seqlen=512, offset=off)
    calib = sysq.calibration(tok, n=args.calib_n, seqlen=512, seed=0)
    if "fp" not in res["ppl"]:
        res["ppl"]["fp"] = {"ppl": perplexity(base, win, quiet=True).ppl, "what": "float"}
        save()
    cells = [c for c in args.cells.split(",") if c and c not in res["ppl"]]
    if cells:
        cache = Path(os.environ.get("PROBE_CACHE", "/tmp/int4b"))
        cache.mkdir(parents=True, exist_ok=True)
        rfile = cache / f"report_{args.calib_n}.pkl"
        if rfile.exists():
            report = pickle.loads(rfile.read_bytes())
        else:
            report = sysq.detect(base, calib.ids[:8], tokenizer=tok, quiet=True)
            rfile.write_bytes(pickle.dumps(report))
        t = time.perf_counter()
        m = base
        r = mitigate(m, plan(report, args.recipe, method=args.method), calib, quiet=True, report=report)
        res["mitigate_seconds"] = round(time.perf_counter() - t, 1)
        log.info("mitigated in %.0fs: %s", res["mitigate_seconds"], r.describe())
    for name in cells:
        if name in BEST:
            what, ag = BEST[name]
            cr = best(r, res, ag)
            what = f"{what}: {cr.describe()}" + (f"; act clip ratios searched ({len(cr.act_clip_ratios)})"
                                                 if cr.act_clip_ratios else "")
        else:
            what, make = CELLS[name]
            cr = make(r)
        q = copy.deepcopy(m)
        # the cell's recipe is the whole recipe (the plan's settings are in it already; quantize would add the plan's
        # per-linear clip ratios and rounding back)
        object.__setattr__(q, "_sysq_plan", None)
        t = time.perf_counter()
        s = quantize(q, dataclasses.replace(cr, name=name), calib, quiet=True)
        ppl = perplexity(q, win, quiet=True).ppl
        res["ppl"][name] = {"ppl": ppl, "what": what, "recipe": s.description,
                            "seconds": round(time.perf_counter() - t, 1)}
        log.info("%s: %.3f (x%.4f) %.0fs", name, ppl, ppl / res["ppl"]["fp"]["ppl"], res["ppl"][name]["seconds"])
        print(f"SPLIT {name:16s} ppl {ppl:8.3f} x {ppl / res['ppl']['fp']['ppl']:.4f}  {what}", flush=True)
        del q
        save()
    print((out / "split.md").read_text())
    return 0


def markdown(res: dict) -> str:
    s = res["settings"]
    fp = res["ppl"]["fp"]["ppl"]
    lines = [f"# {s['recipe']}@{s['method']} on SmolLM2: where the loss comes from", "",
             f"Settings: {json.dumps(s)}; WikiText-2 test windows {s['offset']}-{s['offset'] + s['windows'] - 1}, "
             f"calibration {s['calib_n']} x 512 WikiText-2 valid (seed 0); mitigated once "
             f"({res.get('mitigate_seconds', '?')} s), weights with the plan's rounding unless the cell says otherwise.",
             "",
             "| cell | what | ppl | x FP | s |", "|---|---|---|---|---|"]
    for k, c in res["ppl"].items():
        lines.append(f"| {k} | {c['what']} | {c['ppl']:.3f} | {c['ppl'] / fp:.4f} | {c.get('seconds', '')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
