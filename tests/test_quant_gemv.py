"""The decode GEMV kernels, run in Triton's CPU interpreter in a subprocess (tests/gemv_cases.py: the
interpreter has to be on before triton is imported, which must not leak into the other tests)."""
import subprocess
import sys
from pathlib import Path

import pytest

from sysq.errors import SysqError

from interpreter import run_cases

HERE = Path(__file__).resolve().parent


@pytest.mark.long(109)
def test_gemv_kernels_in_the_triton_interpreter():
    run_cases("gemv_cases.py")


def test_gemv_is_off_on_the_cpu_without_the_interpreter(monkeypatch):
    from sysq.quant import gemv
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not gemv.available("cpu")
    monkeypatch.setenv("SYSQ_GEMV", "0")
    assert not gemv.available("cuda")


def test_cuda_takes_the_int8_gemv_and_keeps_tinygemm_for_int4_unless_asked(monkeypatch):
    pytest.importorskip("triton")
    from sysq.quant import gemv
    monkeypatch.delenv("SYSQ_GEMV", raising=False)
    assert gemv.available("cuda", "int8") and not gemv.available("cuda", "int4")   # H200: int4 GEMV < tinygemm
    monkeypatch.setenv("SYSQ_GEMV", "int4")
    assert gemv.available("cuda", "int4")


@pytest.mark.long(21)
def test_bench_gemv_runs_at_a_tiny_size_on_the_cpu(tmp_path):
    pytest.importorskip("triton")
    import json
    r = subprocess.run([sys.executable, str(HERE.parent / "scripts" / "bench_gemv.py"), "--device", "cpu",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=HERE.parent)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    rows = json.loads((tmp_path / "bench_gemv.json").read_text())["rows"]
    sysq_rows = [x for x in rows if x["kernel"].startswith("sysq Triton")]
    assert len(sysq_rows) == 10 and not any("error" in x for x in rows)   # int4 fma, nibble, tc, int8, scaled per shape
    for x in sysq_rows:     # fp32 accumulation of the exact codes; the scaled op also rounds its output to bf16
        assert x["max_rel_err"] < (2 ** -8 if "scaled" in x["kernel"] else 1e-5), x


@pytest.mark.long(32)
def test_sweep_gemv_runs_at_a_tiny_size_and_writes_a_table_gemv_reads(tmp_path, monkeypatch):
    """(gemv reads SYSQ_GEMV_CONFIGS at import: the same load_table.)"""
    pytest.importorskip("triton")
    import json
    r = subprocess.run([sys.executable, str(HERE.parent / "scripts" / "sweep_gemv.py"), "--device", "cpu",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=HERE.parent)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    rows = json.loads((tmp_path / "sweep_gemv.json").read_text())["rows"]
    assert not any("error" in x for x in rows)
    assert {x["kernel"] for x in rows} >= {"bf16 F.linear", "today (autotuned)", "candidate"}
    assert any((x["config"] or {}).get("KERNEL") == "tc" for x in rows)     # the tensor-core kernel's candidates
    assert all(x["max_rel_err"] < 2 ** -7 for x in rows)      # int codes of bf16 weights, bf16 outputs
    from sysq.quant import gemv
    monkeypatch.setattr(gemv, "_ACTIVE", gemv.load_table(str(tmp_path / "gemv_configs.json")))
    for kind, k, n in (("int8", 256, 128), ("int4", 512, 96)):   # the fastest candidate of each shape (the
        tried = [x for x in rows if x["kernel"] == "candidate" and (x["kind"], x["K"], x["N"]) == (kind, k, n)]
        assert gemv.tuned(kind, 1, k, n) == min(tried, key=lambda x: x["us"])["config"]   # interpreter's pick varies)
    assert gemv.tuned("int8", 1, 256, 128)["BLOCK_K"] == 256 and gemv.tuned("int4", 1, 512, 96)["KERNEL"] in (
        "fma", "nibble", "tc")


def test_the_tuned_table_is_the_gpus_and_a_sweeps_file_replaces_it(tmp_path, monkeypatch):
    """gemv.TUNED is keyed by the GPU's name (an H200's 8B decode shapes); another GPU autotunes; SYSQ_GEMV_CONFIGS'
    table (use_table) applies on any GPU."""
    import json
    from sysq.quant import gemv
    monkeypatch.setattr(gemv, "_ACTIVE", None)
    monkeypatch.setattr(gemv, "gpu_name", lambda: "NVIDIA H200")
    assert gemv.tuned("int8", 1, 14336, 4096) == gemv.TUNED["NVIDIA H200"]["int8"][(14336, 4096)]
    assert gemv.tuned("int8", 2, 14336, 4096) is None                    # one row only
    monkeypatch.delenv("SYSQ_INT4_GEMV", raising=False)
    assert gemv.int4_kernel(4096, 4096) == "mma" and gemv.mma_config(4096, 128256) == 0     # the H200's sweep
    assert gemv.mma_config(4096, 4096) == gemv.TUNED["NVIDIA H200"]["int4"][(4096, 4096)]["CONFIG"]
    monkeypatch.setenv("SYSQ_INT4_GEMV", "tinygemm")                   # the variable overrides the table
    assert gemv.int4_kernel(4096, 4096) == "tinygemm" and not gemv.int4_gemv_for("cuda", 4096, 4096)
    monkeypatch.setenv("SYSQ_INT4_GEMV", "marlin")
    with pytest.raises(SysqError, match="SYSQ_INT4_GEMV='marlin'"):
        gemv.int4_kernel(4096, 4096)
    monkeypatch.delenv("SYSQ_INT4_GEMV")
    monkeypatch.setattr(gemv, "gpu_name", lambda: "NVIDIA A100-SXM4-80GB")
    assert gemv.tuned("int8", 1, 14336, 4096) is None
    (tmp_path / "t.json").write_text(json.dumps({"int8": {"14336x4096": {"SPLIT_K": 2, "BLOCK_N": 8}}}))
    gemv.use_table(str(tmp_path / "t.json"))
    assert gemv.tuned("int8", 1, 14336, 4096) == {"SPLIT_K": 2, "BLOCK_N": 8}


def test_the_tc_kernels_inline_ptx_unpacks_as_its_triton_ops():
    """The tensor-core kernel's ASM=True strings (GPU only), run here by a tiny PTX reader on every pair of int16
    words: for each plane t and dtype, the two 16-bit halves are the nibble-t codes as 1 + u/16 of that dtype."""
    pytest.importorskip("triton")
    import re
    import torch
    from sysq.quant import _gemv_triton as T
    words = torch.arange(-2 ** 15, 2 ** 15, dtype=torch.int32)
    halves = [words & 0xFFFF, torch.roll(words, 7) & 0xFFFF, torch.roll(words, 3001) & 0xFFFF, words.flip(0) & 0xFFFF]
    ins = {"$2": (halves[0], halves[1]), "$3": (halves[2], halves[3])}   # every word, as each half of a register
    for i, asm in enumerate(T._TC_ASM.value):
        t, dtype = i % 4, (torch.bfloat16, torch.float16)[i // 4]
        regs = {r: (hi.to(torch.int64) << 16 | lo) & 0xFFFFFFFF for r, (lo, hi) in ins.items()}
        for op, dst, a, b, *c in re.findall(r"(shl\.b32|shr\.u32|lop3\.b32) (\S+), (\S+), (\w+)(?:, (\w+), (\w+))?;",
                                            asm):
            x, imm = regs[a], int(b, 0)
            if op == "shl.b32":
                regs[dst] = (x << imm) & 0xFFFFFFFF
            elif op == "shr.u32":
                regs[dst] = x >> imm
            else:
                assert c[1] == "0xEA"                                     # (a & b) | c
                regs[dst] = (x & imm) | int(c[0], 0)
        for out, (lo, hi) in ((regs["$0"], ins["$2"]), (regs["$1"], ins["$3"])):
            for half, w in ((out & 0xFFFF, lo), (out >> 16, hi)):
                u = (w >> (4 * t)) & 15
                f = half.to(torch.int32).to(torch.int16).view(dtype).float()
                assert torch.equal(f, 1 + u.float() / 16), (t, dtype)
