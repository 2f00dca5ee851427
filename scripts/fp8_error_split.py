"""Where static FP8's perplexity loss comes from (issue 11), in one run on SmolLM2:

  split        perplexity of FP8 weights only, FP8 activations only (static per tensor / dynamic per token, with and
               without the outlier tokens preserved), both, and GPTQ rounding on the e4m3 grid;
  scale        static scale shrink c * amax (percentile / MSE-style) against the relative error of the inputs;
  sensitivity  with the whole model quantized as w8a8-fp8-static (RTN, no mitigation), which linears cost the most:
               KL(float || model) on a few evaluation windows when only one role / one layer / one linear is
               quantized ("alone"), and when everything but one role is ("all but").

    flock /tmp/sysq-cpu.lock .venv/bin/python scripts/fp8_error_split.py --windows 40 --out results/fp8-acc-split

Writes OUT/split.json and OUT/split.md (resumable: cells already there with the same settings are skipped).
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sysq  # noqa: E402
from evaluation.perplexity import perplexity  # noqa: E402
from sysq.io import atomic_write_text  # noqa: E402
from sysq.mitigate.api import _logprobs, kl_to  # noqa: E402
from sysq.quant.api import quant_linears, quantize  # noqa: E402
from sysq.quant.recipes import from_dict  # noqa: E402

log = logging.getLogger("fp8_error_split")
W = {"bits": 8, "symmetric": True, "granularity": "channel", "type": "float"}
A_STATIC = {"bits": 8, "symmetric": True, "granularity": "tensor", "dynamic": False, "type": "float"}
A_DYN = {"bits": 8, "symmetric": True, "granularity": "token", "dynamic": True, "type": "float"}
KEEP = {"preserve_positions": [0], "preserve_threshold": 100.0}   # BOS and any token with max |x| > 100 in float
# name -> (recipe mapping, what it isolates)
SPLIT = {
    "w-fp8": ({"weight": W}, "FP8 weights only (RTN)"),
    "w-fp8+gptq": ({"weight": W, "method": "gptq"}, "FP8 weights only, GPTQ on the e4m3 grid"),
    "a-fp8-static": ({"act": A_STATIC}, "FP8 activations only, static per tensor"),
    "a-fp8-static+keep": ({"act": {**A_STATIC, **KEEP}}, "... with BOS / outlier tokens kept float"),
    "a-fp8-dynamic": ({"act": A_DYN}, "FP8 activations only, dynamic per token"),
    "a-fp8-dynamic+keep": ({"act": {**A_DYN, **KEEP}}, "... with BOS / outlier tokens kept float"),
    "w8a8-fp8-static": ({"weight": W, "act": A_STATIC}, "both (the recipe, no mitigation)"),
    "w8a8-fp8-static+gptq": ({"weight": W, "act": A_STATIC, "method": "gptq"}, "both, GPTQ weights"),
    "w8a8-fp8-static+gptq+keep": ({"weight": W, "act": {**A_STATIC, **KEEP}, "method": "gptq"},
                                  "both, GPTQ weights, outlier tokens float"),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--calib-n", type=int, default=16)
    ap.add_argument("--kl-windows", type=int, default=2, help="evaluation windows the sensitivity KL is taken on")
    ap.add_argument("--parts", default="split,sensitivity")
    ap.add_argument("--cells", default=",".join(SPLIT), help="split cells to run")
    ap.add_argument("--per-linear", action="store_true", help="sensitivity of every single linear too (slow)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="out/fp8-split")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"model": args.model, "windows": args.windows, "seqlen": args.seqlen, "calib_n": args.calib_n,
                "kl_windows": args.kl_windows, "device": args.device, "dtype": "float32"}
    jpath = out / "split.json"
    res = json.loads(jpath.read_text()) if jpath.exists() else {}
    if res.get("settings") != settings:
        res = {"settings": settings, "ppl": {}, "sensitivity": {}}

    def save():
        atomic_write_text(jpath, json.dumps(res, indent=1))
        atomic_write_text(out / "split.md", markdown(res))

    base, tok = sysq.load(args.model, device=args.device)
    evalw = sysq.windows("wikitext2", tok, n=args.windows, seqlen=args.seqlen)
    calib = sysq.calibration(tok, n=args.calib_n, seqlen=args.seqlen, seed=0)
    parts = args.parts.split(",")
    if "split" in parts:
        if "fp" not in res["ppl"]:
            res["ppl"]["fp"] = {"ppl": perplexity(base, evalw, quiet=args.quiet).ppl, "what": "float"}
            save()
        for name in [c for c in args.cells.split(",") if c]:
            if name in res["ppl"]:
                continue
            d, what = SPLIT[name]
            t = time.perf_counter()
            m = copy.deepcopy(base)
            quantize(m, from_dict({"name": name, **d}), calib, quiet=True)
            res["ppl"][name] = {"ppl": perplexity(m, evalw, quiet=args.quiet).ppl, "what": what,
                                "seconds": round(time.perf_counter() - t, 1)}
            log.info("%s: %.4f (x%.4f)", name, res["ppl"][name]["ppl"], res["ppl"][name]["ppl"] / res["ppl"]["fp"]["ppl"])
            del m
            save()
    if "scale" in parts:
        res["scale"] = scale_sweep(base, calib.ids[:1])
        save()
    if "sensitivity" in parts:
        sensitivity(base, calib, evalw.ids[:args.kl_windows], res, save, args.per_linear)
    print((out / "split.md").read_text())
    return 0


SHRINK = (1.0, 0.9, 0.75, 0.5, 0.25)


@torch.no_grad()
def scale_sweep(base, ids) -> dict:
    """Relative RMS error of every linear's input quantized to e4m3 per tensor with scale c * amax / 448 (amax of
    that input on `ids`), summed over all linears, BOS / outlier tokens (KEEP) left out of the range and the error:
    whether a smaller (MSE / percentile) static scale could beat amax for FP8."""
    from sysq.quant.math import fake_quantize, qparams_from_range
    from sysq.quant.observers import token_keep_mask
    err, sq = dict.fromkeys(SHRINK, 0.0), 0.0

    def hook(mod, args):
        nonlocal sq
        x = args[0].detach().float()
        keep = token_keep_mask(x, KEEP["preserve_threshold"], KEEP["preserve_positions"])
        x = x[~keep]
        hi = x.abs().max()
        sq += float(x.pow(2).sum())
        for c in SHRINK:
            scale, zero = qparams_from_range(-hi * c, hi * c, 8, True, type="float")
            err[c] += float((fake_quantize(x, scale, zero, 8, type="float") - x).pow(2).sum())

    hs = [r.module.register_forward_pre_hook(hook) for r in sysq.get_adapter(base).linear_refs()]
    try:
        base(input_ids=ids.to(next(base.parameters()).device))
    finally:
        for h in hs:
            h.remove()
    return {str(c): (e / sq) ** 0.5 for c, e in err.items()}


@torch.no_grad()
def sensitivity(base, calib, ids, res, save, per_linear: bool) -> None:
    """KL to float with subsets of the linears quantized (w8a8-fp8-static RTN, scales from the whole model)."""
    q = copy.deepcopy(base)
    quantize(q, "w8a8-fp8-static", calib, quiet=True)
    refs = sysq.get_adapter(base).linear_refs()
    qmods = {ql.name: ql for ql in quant_linears(q)}
    fmods = {r.name: r.module for r in refs}
    m = copy.deepcopy(base)
    mrefs = sysq.get_adapter(m).linear_refs()
    ref_lp = _logprobs(base, ids)
    sens = res["sensitivity"]

    def kl_with(names: set[str]) -> float:
        for r in mrefs:
            r.replace(qmods[r.name] if r.name in names else fmods[r.name])
        return kl_to(m, ids, ref_lp)

    every = set(qmods)
    groups = {"all": every}
    roles = sorted({r.role for r in refs})
    for role in roles:
        groups[f"role {role} alone"] = {r.name for r in refs if r.role == role}
        groups[f"all but role {role}"] = every - groups[f"role {role} alone"]
    for i in sorted({r.layer for r in refs}):
        groups[f"layer {i} alone"] = {r.name for r in refs if r.layer == i}
    if per_linear:
        groups.update({f"linear {n}": {n} for n in every})
    for key, names in groups.items():
        if key in sens:
            continue
        t = time.perf_counter()
        sens[key] = {"kl": kl_with(names), "linears": len(names),
                     "weights": sum(qmods[n].out_features * qmods[n].in_features for n in names)}
        log.info("%s: KL %.5f (%.1fs)", key, sens[key]["kl"], time.perf_counter() - t)
        save()
    if per_linear:     # keep the k most costly linears (measured alone) in float, quantize the rest
        rank = sorted(every, key=lambda n: -sens[f"linear {n}"]["kl"])
        for k in (1, 2, 4, 7, 10, 14, 20, 30):
            key = f"all but the top {k} linears"
            if key not in sens:
                sens[key] = {"kl": kl_with(every - set(rank[:k])), "linears": len(every) - k,
                             "weights": sum(qmods[n].out_features * qmods[n].in_features for n in every - set(rank[:k])),
                             "float": rank[:k]}
                log.info("%s: KL %.5f", key, sens[key]["kl"])
                save()


def markdown(res: dict) -> str:
    s = res["settings"]
    lines = ["# Static FP8 on SmolLM2: where the loss comes from", "",
             f"Settings: {json.dumps(s)}; WikiText-2 test, calibration {s['calib_n']} x {s['seqlen']} WikiText-2 valid "
             "(seed 0).", ""]
    fp = res["ppl"].get("fp", {}).get("ppl")
    if res["ppl"]:
        lines += ["| cell | what | ppl | x FP |", "|---|---|---|---|"]
        for k, c in res["ppl"].items():
            lines.append(f"| {k} | {c['what']} | {c['ppl']:.4f} | {c['ppl'] / fp:.4f} |" if fp else
                         f"| {k} | {c['what']} | {c['ppl']:.4f} | |")
    if res.get("scale"):
        lines += ["", "## Static e4m3 scale c * amax / 448: relative RMS error of all linear inputs (1 calibration "
                  "window, BOS / outlier tokens left out)", "", "| c | " + " | ".join(res["scale"]) + " |",
                  "|---" * (len(res["scale"]) + 1) + "|",
                  "| rel. error | " + " | ".join(f"{v:.4f}" for v in res["scale"].values()) + " |"]
    sens = res.get("sensitivity") or {}
    if sens:
        tot = sens.get("all", {}).get("kl")
        lines += ["", f"## Sensitivity: KL(float || model), nats/token on {s['kl_windows']} evaluation windows, "
                  "w8a8-fp8-static RTN on the named linears only", "",
                  "| linears quantized | KL | share of all | linears | weights |", "|---|---|---|---|---|"]
        for k, c in sorted(sens.items(), key=lambda kv: (kv[0].startswith("linear"), -kv[1]["kl"])):
            if k.startswith("linear") and c["kl"] < 0.01 * (tot or 0):
                continue
            sh = f"{c['kl'] / tot:.2f}" if tot else ""
            lines.append(f"| {k} | {c['kl']:.5f} | {sh} | {c['linears']} | {c['weights']:,} |")
        top = [c for k, c in sens.items() if k.startswith("all but the top")]
        if top:
            lines += ["", "Kept in float, in order (the top linears by KL alone): "
                      + ", ".join(x.removeprefix("model.layers.") for x in max(top, key=lambda c: len(c["float"]))["float"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
