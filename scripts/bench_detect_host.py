"""Host time of detect's records and report at Llama-3-8B sizes, no model and no GPU (issue 12: on a GPU detect is
bound by the host, docs/DETECT_FUSED.md): Recorder._flag_group on one chunk group (S sites x B windows x T tokens,
BOS massive at every site) and the 160 site summaries of an 8B report (128 sites of 4096 channels, 32 of 14336;
with site_lists where the tree has it), from synthetic host statistics. Min of --reps timings.

    python scripts/bench_detect_host.py                      # this tree
    python scripts/bench_detect_host.py --tree /tmp/old      # another tree's sysq (git archive <commit> sysq)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def timed(fn, reps: int) -> float:
    fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]), help="directory holding sysq/")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--sites", type=int, default=36, help="S: sites of one chunk group (9 layers x 4)")
    args = p.parse_args()
    sys.path.insert(0, args.tree)
    import numpy as np
    import torch
    from sysq import capture
    from sysq.detect.activation import site_summary
    try:
        from sysq.detect.activation import site_lists
    except ImportError:         # a tree before site_lists: its site_summary reads the rows set on the sites
        site_lists = None
    try:
        from sysq.detect.activation import int8_top
    except ImportError:
        int8_top = None
    from sysq.detect.thresholds import Thresholds
    from sysq.detect.tokens import Namer

    th, S, B, T = Thresholds(), args.sites, 8, 512
    g = torch.Generator().manual_seed(0)
    rec = capture.Recorder.__new__(capture.Recorder)      # _flag_group reads only th
    rec.th = th
    table = capture.SiteTable(4096, "cpu")
    sites = [capture.SiteStats(i // 4, "resid" if i % 4 == 3 else "attn_in", 4096, 100.0, th, table) for i in range(S)]
    ids = torch.randint(3, 1000, (B, T), generator=g)

    def group():
        tok_max = (torch.rand(S, B, T, 1, generator=g) * 3 + 0.5).to(torch.bfloat16).float()
        tok_max[:, :, 0] = 2000.0
        return (tok_max, torch.full((S, B, 1, 1), 0.5), torch.full((S, B), 0.6), torch.full((S, B, 1), 1.5),
                torch.randint(0, 4096, (S, B, T, 1), generator=g), tok_max.clone())
    groups = [group() for _ in range(4)]

    def flag():
        for a in groups:
            rec._flag_group(capture.Batch(ids, 0, True), sites, None, *a)

    rng = np.random.default_rng(0)
    tables = {C: capture.SiteTable(C, "cpu") for C in (4096, 14336)}
    report_sites = []
    for i in range(160):
        C = 14336 if i % 5 == 3 else 4096
        s = capture.SiteStats(i // 5, ["attn_in", "o_in", "mlp_in", "down_in", "resid"][i % 5], C, 100.0, th,
                              tables[C])
        s.windows, s.tokens = 16, 16 * T
        recs = [{"window": w, "pos": 0, "token_id": 1, "channel": 7, "value": 10.0 + w} for w in range(16)]
        s.top.push([r["value"] for r in recs], recs)
        for h in s.hits.values():
            h.add(recs)
        report_sites.append(s)
    for C, t in tables.items():             # the host statistics as Recorder.to_host leaves them: [rows, C] each
        R = len(t.sites)
        absmax = rng.random((R, C), dtype=np.float32) * 5
        absmax[:, 7] = 2e4
        massive = np.zeros((R, C), np.int64)
        massive[:, 7] = 16
        t.host = {"absmax": absmax, "absmax_value": absmax.copy(), "absmax_window": rng.integers(0, 16, (R, C)),
                  "absmax_pos": rng.integers(0, T, (R, C)), "absmax_token": rng.integers(0, 1000, (R, C)),
                  "massive_count": massive, "int8_count": (rng.random((R, C)) < 0.02).astype(np.int64) * 3,
                  "window_sums": np.tile([8.0, 9.0, 20.0], (R, 1)), "top3_sum": np.tile([1.0, 2.0, 3.0], (R, 1))}
        for name in ("channel_absmax5", "channel_absmean5"):
            t.host |= {name: rng.random((R, C)), name + "_ok": np.ones((R, C), bool), name + "_x": rng.random((R, C))}
        if int8_top:            # a tree that orders the INT8 channels on the device (round_channels)
            t.host["int8_top"] = int8_top(torch.from_numpy(t.host["int8_count"])).numpy()
        for s in t.sites:
            for name, h in t.host.items():
                setattr(s, name, h[s.row])

    def report():
        namer = Namer(None)
        if site_lists:
            site_lists(list(tables.values()))
        return [site_summary(s, ["x"], namer, th) for s in report_sites]

    print(f"tree {args.tree}; torch {torch.__version__}, {torch.get_num_threads()} threads; min of {args.reps}")
    print(f"_flag_group, S={S} sites x B={B} x T={T}: {timed(flag, args.reps) / len(groups) * 1e3:.2f} ms a group")
    print(f"160 site summaries (8B widths): {timed(report, args.reps) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
