"""auto on models it was not tuned on: every family, a random model with a planted BOS / [CLS] outlier (seeds the
tests do not use, larger than the test models), each recipe: the KL divergence of the quantized model's output
distribution from the float model's on held-out windows (never the calibration windows), for no mitigation,
SmoothQuant (alpha 0.5), auto-fast (the rules) and auto (measured), with the standard error of auto's difference to
no mitigation (paired over the held-out windows: a few tokens of these random models carry KLs of 30+ nats, so 8
windows left standard errors of 0.3 nats/token on gemma3 w4a16, more than the differences they ranked).

    python scripts/auto_families.py [--families llama,opt] [--recipes w8a8-static,w4a16] [--held 64] [--out OUT]

Prints a Markdown table (lower is better) and writes OUT/auto_families.json and .md.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import sysq  # noqa: E402
from sysq.mitigate.api import kl_tokens, _logprobs  # noqa: E402
from tiny_models import FAMILY_CONFIGS, VOCAB, plant_bos_outlier, tiny_model  # noqa: E402

RECIPES = ["w8a8-static", "w8a8", "w4a16", "w4a8"]
PLANS = ["none", "smoothquant", "auto-fast", "auto"]
SIZES = {"hidden": 128, "inter": 256, "layers": 4}


def model_of(family: str, seed: int):
    h, f = SIZES["hidden"], SIZES["inter"]
    size = {"gpt2": dict(n_embd=h, n_inner=f), "opt": dict(hidden_size=h, ffn_dim=f, word_embed_proj_dim=h)}.get(
        family, dict(hidden_size=h, intermediate_size=f))
    if "head_dim" in FAMILY_CONFIGS[family]:
        size["head_dim"] = h // 4
    m = tiny_model(family, layers=SIZES["layers"], seed=seed, **size)
    return plant_bos_outlier(m, bos=1, channel=11, column=23)


def ids(n: int, seed: int, seqlen: int = 64) -> torch.Tensor:
    x = torch.randint(3, VOCAB, (n, seqlen), generator=torch.Generator().manual_seed(seed))
    x[:, 0] = 1
    return x


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default=",".join(FAMILY_CONFIGS))
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--seed", type=int, default=7, help="model seed (the tests use 0)")
    ap.add_argument("--held", type=int, default=64, help="held-out windows of 128 tokens (default: %(default)s)")
    ap.add_argument("--held-seed", type=int, default=200, help="seed of the held-out windows (default: %(default)s)")
    ap.add_argument("--plans", default="", help="more named plans to score, ','-separated (printed with the standard "
                    "error over the held-out windows), e.g. gptq,smooth+gptq")
    ap.add_argument("--out", default="out/auto_families")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    calib, held = ids(32, 100, 128), ids(args.held, args.held_seed, 128)
    res, start = {}, time.perf_counter()
    for fam in args.families.split(","):
        base = model_of(fam, args.seed)
        report = sysq.detect(base, calib, quiet=True)
        ref = _logprobs(base, held)
        for r in args.recipes.split(","):
            row, per = {}, {}
            for method in PLANS + [x for x in args.plans.split(",") if x and x not in PLANS]:
                if method == "smoothquant" and r != "w8a8-static":
                    continue
                m = copy.deepcopy(base)
                p = sysq.plan(report, r, method)
                sysq.quantize(m, sysq.mitigate(m, p, calib, report=report, quiet=True), calib, quiet=True)
                per[method] = kl_tokens(m, held, ref).mean(-1)      # per held-out window
                row[method] = float(per[method].mean())
                if p.search is not None:
                    row["chosen"] = p.search.chosen
            d = per["auto"] - per["none"]
            row["auto-none"], row["auto-none_se"] = float(d.mean()), float(d.std() / len(d) ** 0.5)
            res[f"{fam}|{r}"] = row
            print(fam, r, {k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
            for method, v in per.items():
                print(f"  {method}: {float(v.mean()):.3f} +- {float(v.std() / len(v) ** 0.5):.3f}", flush=True)
    lines = [f"KL(float || quantized), nats/token, on {args.held} held-out windows x 128 random tokens (BOS first); models: "
             f"{SIZES['layers']} layers, hidden {SIZES['hidden']}, seed {args.seed}, planted BOS outlier; calibration 32 "
             f"x 128 other windows. `python scripts/auto_families.py` ({time.perf_counter() - start:.0f} s, CPU).", "",
             "| family | recipe | none | SmoothQuant a=0.5 | auto-fast | auto | auto's plan | auto - none (s.e.) | "
             "auto < none | auto < SmoothQuant |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key, row in res.items():
        fam, r = key.split("|")
        sq = row.get("smoothquant")
        lines.append(f"| {fam} | {r} | {row['none']:.5f} | {'–' if sq is None else f'{sq:.5f}'} | {row['auto-fast']:.5f} "
                     f"| {row['auto']:.5f} | {row['chosen']} | {row['auto-none']:+.3g} ({row['auto-none_se']:.2g}) | "
                     f"{'yes' if row['auto'] < row['none'] else 'NO'} | "
                     f"{'–' if sq is None else 'yes' if row['auto'] < sq else 'NO'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "auto_families.json").write_text(json.dumps(res, indent=1))
    (out / "auto_families.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
