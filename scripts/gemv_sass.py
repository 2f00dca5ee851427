"""Instructions per weight byte of sysq's Triton GEMVs, from their SASS for sm_90 (H100/H200), compiled here.

    python scripts/gemv_sass.py            # no GPU needed: Triton's own ptxas and nvdisasm

A batch-1 GEMV streams each weight byte once; where its inner loop issues too many instructions per byte, it is
bound by instruction issue, not memory (an H200 issues about 33 T thread-instructions/s: 3 TB/s leaves about
11 per byte at full issue). For each kernel and launch config this compiles the kernel (K, N divisible by 16,
as Triton specializes them at a real launch), finds its hot loop (the longest backward branch), and prints the
loop's instruction count, the weight bytes each thread streams per trip, their ratio, the register count and the
opcodes that dominate. Static counts, not timings: the GPU's numbers come from scripts/bench_gemv.py.
"""
from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIG = {"x_ptr": "*bf16", "w_ptr": "*i32", "M": "i32", "N": "i32", "K": "i32", "stride_xm": "i32"}
CASES = [   # (kernel, constexprs, num_warps, weight bytes per thread per loop trip)
    ("int4 nibble", dict(G=128, BLOCK_N=16, GPC=2, SPLIT_K=1), 4, 16 * 2 * 64 / 128),
    ("int4 nibble", dict(G=128, BLOCK_N=8, GPC=4, SPLIT_K=1), 2, 8 * 4 * 64 / 64),
    ("int4 fma", dict(G=128, BLOCK_N=8, GPC=32, SPLIT_K=1), 4, 8 * 32 * 64 / 128),
    ("int4 fma", dict(G=128, BLOCK_N=8, GPC=16, SPLIT_K=1), 2, 8 * 16 * 64 / 64),
    ("int4 fma", dict(G=128, BLOCK_N=4, GPC=32, SPLIT_K=1), 4, 4 * 32 * 64 / 128),
    ("int4 tc", dict(G=128, BLOCK_N=128, GPI=1, SPLIT_K=1, ASM=True), 4, 128 * 64 / 128),
    ("int4 tc", dict(G=128, BLOCK_N=256, GPI=1, SPLIT_K=1, ASM=True), 4, 256 * 64 / 128),
    ("int4 tc", dict(G=128, BLOCK_N=128, GPI=1, SPLIT_K=1, ASM=False), 4, 128 * 64 / 128),
    ("int4 tc", dict(G=128, BLOCK_N=256, GPI=1, SPLIT_K=1, ASM=False), 4, 256 * 64 / 128),
    ("int4 tc", dict(G=64, BLOCK_N=128, GPI=2, SPLIT_K=1, ASM=True), 4, 128 * 64 / 128),
    ("int4 tc", dict(G=128, BLOCK_N=32, GPI=2, SPLIT_K=1, ASM=True), 2, 32 * 128 / 64),
    ("int8", dict(BLOCK_N=16, BLOCK_K=512, SPLIT_K=1, SCALED=True, GATED=False), 4, 16 * 512 / 128),
    ("int8", dict(BLOCK_N=16, BLOCK_K=1024, SPLIT_K=1, SCALED=True, GATED=False), 8, 16 * 1024 / 256),
]


def sass(fn, sig, consts, warps, tmp, stages: int = 1):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    div = {(i,): [["tt.divisibility", 16]] for i, (name, ty) in enumerate(sig.items())
           if ty.startswith("*") or name in ("N", "K", "stride_xm")}
    k = triton.compile(ASTSource(fn, sig, constexprs=consts, attrs=div), target=GPUTarget("cuda", 90, 32),
                       options=dict(num_warps=warps, num_stages=stages))
    cubin = Path(tmp) / "k.cubin"
    cubin.write_bytes(k.asm["cubin"])
    bindir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    text = subprocess.run([str(bindir / "nvdisasm"), "-c", str(cubin)], capture_output=True, text=True).stdout
    usage = subprocess.run([str(bindir / "cuobjdump"), "--dump-resource-usage", str(cubin)], capture_output=True,
                           text=True).stdout
    regs = re.search(r"REG:(\d+)", usage)
    return text, int(regs.group(1)) if regs else -1


def hot_loop(text: str) -> collections.Counter:
    lines = text.splitlines()
    labels = {m.group(1): i for i, ln in enumerate(lines) if (m := re.match(r"^\s*(\.L_x_\d+):", ln))}
    best: list[str] = []
    for i, ln in enumerate(lines):
        m = re.search(r"BRA `\((\.L_x_\d+)\)", ln)
        if m and labels.get(m.group(1), i) < i:
            body = [x for x in lines[labels[m.group(1)]:i + 1] if re.search(r"/\*[0-9a-f]{4}\*/", x)]
            best = max(best, body, key=len)
    ops = collections.Counter()
    for ln in best:
        m = re.search(r"\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_.]+)", ln)
        if m:
            ops[m.group(2)] += 1
    return ops


def main() -> int:
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    import triton
    from sysq.quant import _gemv_triton as T
    bodies = {"int4 nibble": T._int4_kernel, "int4 fma": T._int4_fma_kernel, "int4 tc": T._int4_tc_kernel,
              "int8": T._int8_kernel}
    print(f"triton {triton.__version__}, target sm_90; hot loop of each kernel (static SASS)")
    print(f"{'kernel':12s} {'config':44s} {'warps':>5s} {'regs':>4s} {'instr':>6s} {'B/thread':>8s} {'instr/B':>7s}  top opcodes")
    with tempfile.TemporaryDirectory() as tmp:
        for name, consts, warps, nbytes in CASES:
            sig = dict(SIG)
            if name == "int8":
                sig = {"x_ptr": "*bf16", "w_ptr": "*i32", "out_ptr": "*bf16", "scale_ptr": "*fp32", **{
                    k: v for k, v in SIG.items() if k not in ("x_ptr", "w_ptr")}}
            else:   # the tc kernel reads int16 words (pack_int4_tc)
                sig = {"x_ptr": "*bf16", "w_ptr": "*i16" if name == "int4 tc" else "*i32", "sz_ptr": "*bf16",
                       "out_ptr": "*fp32", **{k: v for k, v in SIG.items() if k not in ("x_ptr", "w_ptr")}}
            sig.update({k: "constexpr" for k in consts})
            text, regs = sass(triton.jit(bodies[name]), sig, consts, warps, tmp)
            ops = hot_loop(text)
            n = sum(ops.values())
            cfg = ",".join(f"{k}={v}" for k, v in consts.items() if k not in ("SPLIT_K", "SCALED", "GATED")
                           and (k, v) != ("ASM", False))
            print(f"{name:12s} {cfg:44s} {warps:5d} {regs:4d} {n:6d} {nbytes:8.0f} {n / nbytes:7.2f}  "
                  + ", ".join(f"{k} {v}" for k, v in ops.most_common(6)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
