"""Does the sequential pipeline give the in-memory perplexity? Both paths side by side, one run.

    flock /tmp/sysq-cpu.lock python scripts/check_sequential_ppl.py --windows 8 --calib-n 8
    python scripts/check_sequential_ppl.py --tiny          # a tiny random Llama, seconds (does it run)

For each row (w8a8-static with the auto-fast plan: detect -> plan -> mitigate -> quantize; w4a16+gptq with no
mitigation) the float model is loaded twice and run once in memory (pipeline="memory") and once sequentially
(pipeline="sequential": one decoder layer at a time on --device, here the same CPU), then its perplexity is
measured on the first --windows windows of --seqlen tokens of --data. Prints the two perplexities, their relative
difference (goal: within 0.2%) and the seconds of each path; writes $OUT/sequential-ppl.json (default out/).
Measured auto (method "auto") is not a row: it runs in memory only (it copies the whole model per candidate);
auto-fast is the rules' plan that auto starts from.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

ROWS = (("w8a8-static", "auto-fast"), ("w4a16+gptq", "none"))


def tiny():
    """A tiny random Llama and random windows (no data files needed)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from sysq.data import Windows
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, vocab_size=300, bos_token_id=1, eos_token_id=2,
                      max_position_embeddings=256, tie_word_embeddings=False)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 300, (6, 32), generator=g)
    ids[:, 0] = 1

    def load():
        torch.manual_seed(0)
        return LlamaForCausalLM(cfg).eval(), None

    def win(rows):
        return Windows(ids=rows, source="random tokens", seqlen=rows.shape[1], bos=None, seed=0,
                       total_windows=len(rows))
    return load, win(ids[:4]), win(ids[4:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", default="wikitext2")
    p.add_argument("--windows", type=int, default=8, help="perplexity windows (default: %(default)s)")
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--calib-n", type=int, default=8, help="calibration windows of wikitext2-valid")
    p.add_argument("--device", default="cpu", help="where the sequential path computes (default: %(default)s)")
    p.add_argument("--rows", default=",".join(r for r, _ in ROWS), help="recipes to compare (default: %(default)s)")
    p.add_argument("--tiny", action="store_true", help="a tiny random Llama instead of --model")
    p.add_argument("--out", default=os.environ.get("OUT", "out"))
    args = p.parse_args()

    import sysq
    from evaluation.perplexity import perplexity
    from sysq.io import atomic_write_text

    if args.tiny:
        load, calib, evalw = tiny()
    else:
        def load():
            return sysq.load(args.model)
        _, tok = load()
        calib = sysq.calibration(tok, n=args.calib_n, seqlen=args.seqlen)
        evalw = sysq.windows(args.data, tok, n=args.windows, seqlen=args.seqlen)
    print(f"model={'tiny' if args.tiny else args.model} eval={args.data} {len(evalw.ids)}x{evalw.seqlen} "
          f"calib={len(calib.ids)}x{calib.seqlen} device={args.device} torch {torch.__version__}")
    print("| recipe | plan | ppl memory | ppl sequential | rel diff | s memory | s sequential | detect same |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for recipe, method in [row for row in ROWS if row[0] in args.rows.split(",")]:
        res = {}
        for pipeline in ("memory", "sequential"):
            model, tok = load()
            kw = dict(quiet=True, pipeline=pipeline, device=args.device)
            t = time.perf_counter()
            r, report = recipe, None
            if method != "none":
                report = sysq.detect(model, calib, tok, **kw)
                r = sysq.mitigate(model, sysq.plan(report, recipe, method), calib, report=report, **kw)
            sysq.quantize(model, r, calib, **kw)
            secs = time.perf_counter() - t
            ppl = perplexity(model, evalw, quiet=True).ppl
            rep = None if report is None else json.dumps({k: v for k, v in report.to_dict().items() if k != "cost"})
            res[pipeline] = (ppl, secs, rep)
            del model
        (pm, sm, rm), (ps, ss, rs) = res["memory"], res["sequential"]
        row = {"recipe": recipe, "plan": method, "ppl_memory": pm, "ppl_sequential": ps,
               "rel_diff": abs(ps - pm) / pm, "seconds_memory": sm, "seconds_sequential": ss,
               "detect_same": None if rm is None else rm == rs}
        rows.append(row)
        same = "" if row["detect_same"] is None else ("identical" if row["detect_same"] else "DIFFERS")
        print(f"| {recipe} | {method} | {pm:.4f} | {ps:.4f} | {100 * row['rel_diff']:.4f}% | {sm:.1f} | {ss:.1f} | "
              f"{same} |", flush=True)
    out = Path(args.out)
    atomic_write_text(out / "sequential-ppl.json", json.dumps({"settings": vars(args), "rows": rows}, indent=2) + "\n")
    ok = all(r["rel_diff"] <= 0.002 and r["detect_same"] is not False for r in rows)
    print(("all within 0.2%" if ok else "NOT within 0.2% (or detect differs)") + f"; wrote {out}/sequential-ppl.json")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
