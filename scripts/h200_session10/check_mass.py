"""sysq.attention_mass on a GPU (issue 12): the Triton mass against the materialised probabilities, its time
against eager attention's statistics at 8B shapes, and detect's report with it against eager's.

    python scripts/h200_session10/check_mass.py
"""
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

import sysq  # noqa: E402
from bench_scale import build, windows  # noqa: E402
from sysq.attention_mass import AttentionMass, received_mass  # noqa: E402
from sysq.capture import column_stats  # noqa: E402


def timed(fn, reps=20):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def kernels():
    g = torch.Generator(device="cuda").manual_seed(0)
    print("| shape B,H,Hkv,T,D | dtype | max |diff| | max rel | sum check | mass ms | eager stats ms |")
    for (B, H, Hkv, T, D), dt in [((8, 32, 8, 512, 128), torch.bfloat16), ((2, 9, 3, 512, 64), torch.float32),
                                  ((1, 32, 8, 2048, 128), torch.bfloat16), ((8, 9, 3, 512, 64), torch.float32)]:
        q = (2 * torch.randn(B, H, T, D, device="cuda", generator=g)).to(dt)
        k = (2 * torch.randn(B, Hkv, T, D, device="cuda", generator=g)).to(dt)
        k[:, :, 0] *= 4                                    # a key that draws mass, as a sink does
        m = AttentionMass(q, k, D ** -0.5, None)
        ref = m.probabilities().sum(2, dtype=torch.float64)
        got = received_mass(q, k, D ** -0.5)
        d = (got - ref).abs()
        rel = (d / ref.abs().clamp_min(1e-3)).max().item()
        total = (got.sum(-1) - T).abs().max().item()
        t_mass = timed(lambda: received_mass(q, k, D ** -0.5))

        def eager():       # what eager attention + the hook's column pass do for the mass (no PV product)
            kk = k.repeat_interleave(H // Hkv, 1)
            s = q @ kk.transpose(-1, -2) * D ** -0.5
            s = s + torch.full((T, T), float("-inf"), device="cuda", dtype=dt).triu(1)
            w = torch.softmax(s, -1, dtype=torch.float32).to(dt)
            return column_stats([w.flatten(0, 1)], False)[2]
        t_eager = timed(eager)
        print(f"| {B},{H},{Hkv},{T},{D} | {str(dt)[6:]} | {d.max().item():.2e} | {rel:.2e} | {total:.2e} | "
              f"{t_mass:.3f} | {t_eager:.3f} |", flush=True)


def flat(x, out, path=""):
    if isinstance(x, dict):
        for k, v in x.items():
            flat(v, out, f"{path}.{k}")
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            flat(v, out, f"{path}[{i}]")
    else:
        out[path] = x
    return out


def reports():
    model = build("8b", None, "cuda", torch.bfloat16)
    ids = windows(model.config, 16, 512)
    rs = {}
    for flag in ("1", "0"):
        os.environ["SYSQ_ATTENTION_MASS"] = flag
        rs[flag] = sysq.detect(model, ids, quiet=True, batch_size=8)
    a, b = (flat({"attention": r.attention, "consistency": r.consistency, "summary": r.summary}, {}) for r in
            (rs["1"], rs["0"]))
    same = sum(1 for k in a if a.get(k) == b.get(k))
    worst = max(((abs(a[k] - b[k]) / max(abs(b[k]), 1e-9), k) for k in a if isinstance(a[k], float)
                 and isinstance(b.get(k), float)), default=(0, ""))
    diff = [k for k in a if not isinstance(a[k], float) and a.get(k) != b.get(k)]
    print(f"8B detect, mass vs eager: {len(a)} / {len(b)} leaves, {same} equal; worst float rel diff {worst[0]:.2e} "
          f"at {worst[1]}; non-float leaves that differ: {len(diff)} {diff[:8]}")
    print("summary (mass):", {k: v for k, v in rs["1"].summary.items() if not isinstance(v, (list, dict))})
    print("summary (eager):", {k: v for k, v in rs["0"].summary.items() if not isinstance(v, (list, dict))})


if __name__ == "__main__":
    kernels()
    reports()
