"""sysq.attention: the decode kernel and the `sysq_decode` attention implementation, run in Triton's CPU
interpreter in a subprocess (tests/attention_cases.py: the interpreter has to be on before triton is imported,
which must not leak into the other tests)."""
import pytest
import torch

from sysq import attention
from sysq.errors import UnsupportedArchitecture
from interpreter import run_cases
from tiny_models import tiny_model


@pytest.mark.long(56)
def test_decode_attention_in_the_triton_interpreter():
    run_cases("attention_cases.py")


def test_without_the_kernel_every_call_is_sdpa(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not attention.available("cpu")
    model = tiny_model("llama", layers=2)
    ids = torch.randint(3, 300, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        attention.enable(model)
        assert model.config._attn_implementation == "sysq_decode"
        assert torch.equal(model(input_ids=ids).logits, ref)


def test_splits_only_long_caches():
    assert attention.splits(1, 8, 107) == 1                 # the bench's cache: one kernel, no combine
    assert attention.splits(1, 8, 142) == 3                 # the 8B decode bench's cache: 24 programs, not 8
    assert attention.splits(1, 8, 4096) == 32
    assert attention.splits(1, 8, 1 << 20) == 32            # capped


def test_launch_config_fits_the_tiles_in_shared_memory(monkeypatch):
    """128 keys and 3 stages (measured fastest on an H200) where a K and a V tile per stage fit; fewer stages, then
    fewer keys, where they do not (no out-of-resources failure at launch)."""
    monkeypatch.setattr(attention, "_shared_memory", lambda index: int(0.85 * 232448))   # an H200's opt-in maximum
    assert attention.launch_config(1, 8, 107, "cuda:0") == dict(BLOCK_L=128, SPLIT=1, num_warps=4, num_stages=3)
    assert attention.launch_config(1, 8, 107, "cuda:0", 64, 4)["num_stages"] == 3       # SmolLM2 fp32: D = 64
    assert attention.launch_config(1, 8, 107, "cuda:0", 128, 4)["num_stages"] == 1      # fp32, D = 128
    assert attention.launch_config(1, 8, 142, "cuda:0") == dict(BLOCK_L=64, SPLIT=3, num_warps=4, num_stages=3)
    monkeypatch.setattr(attention, "_shared_memory", lambda index: int(0.85 * 101376))   # 99 KB
    assert attention.launch_config(1, 8, 107, "cuda:0", 128, 4) == dict(BLOCK_L=64, SPLIT=1, num_warps=4,
                                                                          num_stages=1)
    assert attention.launch_config(1, 8, 107, "cpu") == dict(BLOCK_L=16, SPLIT=1)     # the interpreter's


@pytest.mark.long(21)
def test_bench_decode_kernels_runs_at_a_tiny_size_on_the_cpu(tmp_path):
    pytest.importorskip("triton")
    import json
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "scripts" / "bench_decode_kernels.py"), "--device", "cpu",
                        "--quick", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=root)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    out = json.loads((tmp_path / "bench_decode_kernels.json").read_text())
    rows, summary = out["rows"], out["summary"]
    assert not any("error" in x for x in rows)
    assert {"L=24", "L=40", "L=24 mask", "512x96", "512x96 gated", "256x128", "down: gated vs separate"} <= set(summary)
    att = [x for x in rows if x["part"] == "attention"]
    assert {x["kernel"] for x in att} == {"shipped op", "torch sdpa (repeat_kv)", "candidate"}
    assert {x["config"]["SPLIT"] for x in att if x["kernel"] == "candidate"} == {1, 2}
    assert all(x["max_abs_err"] < 1e-2 for x in att)
    gem = [x for x in rows if x["part"] == "gemv" and "max_rel_err" in x]
    assert {x["path"] for x in gem} >= {"today", "gated today", "plain", "gated"}
    assert all(x["max_rel_err"] < 2 ** -7 for x in gem)     # int8 codes, fp32 sums, bf16 outputs
    assert (tmp_path / "bench_decode_kernels.md").read_text().count("| L=") == 3


def test_encoders_are_refused():
    with pytest.raises(UnsupportedArchitecture, match="not a decoder"):
        attention.enable(tiny_model("bert", layers=1))
