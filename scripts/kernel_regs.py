"""The site-reduction kernels compiled for one H200 (sm_90) on a machine without a GPU: registers, stack (spills)
and shared memory per design and tile, from Triton's compiler and the cubin (its bundled ptxas / cuobjdump). What
the launcher would specialize at run time is given as hints (16-byte aligned pointers, T, C and strides divisible
by 16, unit channel stride), so the code is what the device would run, up to the Triton version.

    python scripts/kernel_regs.py                  # the three designs' default tiles (bf16 sites, weights)
    python scripts/kernel_regs.py split:2,32,1024,4,1,1/4,1024,4 wide:4,32,256,4,0,1
"""
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from sysq import _reduce_triton as R  # noqa: E402

CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
X = "*bf16"
PARTIALS = {"cmax_ptr": X, "cidx_ptr": "*i32", "cval_ptr": X, "csum_ptr": "*fp64", "ccnt_ptr": "*i32",
            "tmax_ptr": X, "targ_ptr": "*i32", "tval_ptr": X}
SITE = {"x_ptr": X, "thr_ptr": "*fp32", "T": "i32", "C": "i32", "s_b": "i32", "s_t": "i32", "s_c": "constexpr",
        "NTB": "i32", "NCB": "i32", **PARTIALS}
TOKEN = {"x_ptr": X, "T": "i32", "C": "i32", "s_b": "i32", "s_t": "i32", "s_c": "constexpr", "NTT": "i32",
         "tmax_ptr": X, "targ_ptr": "*i32", "tval_ptr": X}
GROUP = {"off_ptr": "*i64", "SITE_C": "i32"}               # the split kernels' grouped launch (launch_group)
SITE_SPLIT = {**SITE, **GROUP, "SITE_T": "i32"}
TOKEN_SPLIT = {**TOKEN, **GROUP}
TOKEN_SPLIT["SITE_T"] = TOKEN_SPLIT.pop("SITE_C")


def usage(fn, args: dict, consts: dict, warps: int) -> str:
    sig = {**args, **{k: "constexpr" for k in consts}}
    hints = {(i,): [["tt.divisibility", 16]] for i, (n, t) in enumerate(sig.items())
             if t.startswith("*") or n in ("T", "C", "s_b", "s_t", "NTB", "NTT")}
    k = triton.compile(ASTSource(fn, sig, {"s_c": 1, **consts}, hints), target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": warps, "num_stages": R.STAGES})
    cubin = Path("/tmp") / f"sysq_kernel_regs_{os.getpid()}.cubin"
    cubin.write_bytes(k.asm["cubin"])
    out = subprocess.run([str(CUOBJDUMP), "--dump-resource-usage", str(cubin)], capture_output=True, text=True).stdout
    cubin.unlink()
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+)", out)
    return f"registers {m[1]}, stack {m[2]} B, shared {m[3]} B" if m else out.strip()[-200:]


def report(name: str, tile=None, token_tile=None) -> None:
    R.use(name, tile, token_tile)
    t = (R.BLOCK_T, R.TOKENS, R.BLOCK_C, R.NUM_WARPS, R.ROWWISE, R.PREFETCH)
    if name == "fused":
        for stats in (True, False):
            c = dict(BLOCK_T=t[0], TOKENS=t[1], BLOCK_C=t[2], TOKEN_STATS=stats)
            print(f"fused {t[:4]} {'sites' if stats else 'weights'}: {usage(R._site_reduce_kernel, SITE, c, t[3])}")
        return
    for grouped in ((False, True) if name == "split" else (False,)):
        g = dict(GROUPED=grouped, ALIGN=8 if grouped else 1)
        for what, stats in (("sites", name == "wide"), ("weights", False)):
            c = dict(BLOCK_T=t[0], TOKENS=t[1], BLOCK_C=t[2], MASK_C=False, ROWWISE=bool(t[4]), MAXIMA=True,
                     TOKEN_STATS=stats, PREFETCH=bool(t[5]), **g)
            print(f"{name} {t} channel kernel, {what}{', grouped' if grouped else ''}: "
                  f"{usage(R._site_reduce_channel_kernel, SITE_SPLIT, c, t[3])}")
        if name == "split":
            bt, bc, nw = R.TOKEN_TILE
            c = dict(BLOCK_T=bt, BLOCK_C=bc, MASK_T=False, PREFETCH=bool(t[5]), **g)
            print(f"split token kernel {R.TOKEN_TILE}{', grouped' if grouped else ''}: "
                  f"{usage(R._site_reduce_token_kernel, TOKEN_SPLIT, c, nw)}")


def main() -> None:
    configs = []
    for a in sys.argv[1:]:                # DESIGN:tile[/token tile], as bench_reduce.py's --tiles
        name, _, rest = a.rpartition(":")
        tile, _, tok = rest.partition("/")
        configs.append((name or "fused", tuple(map(int, tile.split(","))),
                        tuple(map(int, tok.split(","))) if tok else None))
    for c in configs or [(k, None, None) for k in R.VARIANTS]:
        report(*c)


if __name__ == "__main__":
    main()
