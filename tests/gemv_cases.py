"""The Triton GEMV kernels (sysq/quant/gemv.py) in Triton's CPU interpreter. Not collected by itself: the
interpreter must be on before triton is first imported, so tests/test_quant_gemv.py runs this file in a
subprocess with TRITON_INTERPRET=1."""
import os

import pytest
import torch

from sysq.quant import gemv, kernels
from sysq.quant.recipes import real_backend
from test_quant_kernels import BF16, _recipe, _x, twin

assert os.environ.get("TRITON_INTERPRET") == "1", "run through tests/test_quant_gemv.py"


# every split on the small shapes (2 K chunks in 4 slices: empty slices; 6 chunks: a short last slice); the
# program's row (pid_m) and slice (pid_s) are separate axes, so the 16-row case (each row its own programs, the
# interpreter's most costly) runs unsplit, the 3-row one in two slices
INT4_CASES = [(1, 48, 256, 64, s) for s in (1, 2, 4)] + [(1, 32, 384, 32, s) for s in (1, 2, 4)] + [
    (3, 40, 512, 128, 1), (3, 40, 512, 128, 2), (16, 24, 256, 128, 1)]


@pytest.mark.parametrize("m, n, k, g, split", INT4_CASES)
@pytest.mark.parametrize("kernel", gemv.INT4_KERNELS)
def test_int4_gemv_equals_the_dequantized_matmul(m, n, k, g, split, kernel, monkeypatch):
    monkeypatch.setenv("SYSQ_INT4_GEMV", kernel)
    gen = torch.Generator().manual_seed(m * n + split)
    codes = torch.randint(-8, 8, (n, k), generator=gen)
    qw = gemv.pack_nibbles(codes)
    assert qw.dtype == torch.uint8 and qw.shape == (n, k // 2)
    assert torch.equal(gemv.unpack_nibbles(qw) - 8, codes)                          # round trip
    sz = torch.randn(k // g, n, 2, generator=gen).to(torch.bfloat16)
    x = torch.randn(m, k, generator=gen).to(torch.bfloat16)
    ref = x.float() @ gemv.dequantize_int4(qw, sz, g).t()
    y = torch.ops.sysq.int4_gemv(x, qw, sz, g, split)
    assert y.shape == (split, m, n) and y.dtype == torch.float32
    torch.testing.assert_close(y.sum(0), ref, rtol=1e-5, atol=1e-4 * float(ref.abs().max()))


@pytest.mark.parametrize("m, n, k", [(1, 48, 256), (3, 40, 384), (16, 17, 1024)])
@pytest.mark.parametrize("split", [1, 2])
def test_int8_gemv_equals_the_integer_matmul(m, n, k, split):
    gen = torch.Generator().manual_seed(m + n + split)
    q = torch.randint(-128, 128, (n, k), generator=gen, dtype=torch.int8)
    x = torch.randn(m, k, generator=gen).to(torch.bfloat16)
    ref = x.float() @ q.float().t()
    y = torch.ops.sysq.int8_gemv(x, q, split).sum(0)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-4 * float(ref.abs().max()))


def test_split_k_fills_the_grid_and_stays_fusable():
    assert gemv.split_k(1, 4096, 32) == 1                   # 256 programs already
    assert gemv.split_k(1, 1024, 32) == 4                   # k/v projections of an 8B model
    assert gemv.split_k(1, 64, 1000) == 8                   # capped: the caller's sum stays pointwise
    assert gemv.split_k(1, 64, 2) == 2                      # never more slices than K chunks


@pytest.mark.parametrize("recipe", ["w8a16", "w4a16-g32", "w4a16-g32-sym", "w4a16"])
def test_weight_only_modules_take_the_gemv_for_few_rows_and_match_their_twin(recipe):
    x = _x()
    ql, lin = twin(recipe, x)
    real = kernels.MODULES[real_backend(ql.weight_spec, ql.act_spec)](ql)
    assert real.gemv and "Triton GEMV" in real.kernel
    _matches_its_twin(recipe, ql, lin, real)


def _matches_its_twin(recipe, ql, lin, real):
    torch.testing.assert_close(real.dequantized_weight(), ql.dequantized_weight(), rtol=2 ** -8, atol=1e-6)
    for shape in [(1, 1, 128), (2, 3, 128), (3, 9, 128)]:        # decode rows (<= 16) and prefill rows (27)
        xs = _x(5)[: shape[0], : shape[1]]
        with torch.no_grad():
            sim, out, ref = ql(xs), real(xs), lin(xs)
        assert out.shape == sim.shape and out.dtype == sim.dtype
        err = float((out - sim).norm()) / float(sim.norm())
        assert err <= BF16, (recipe, shape, err)
        if recipe != "w8a16":      # int8's own error is near bf16 rounding; int4's is far above it
            assert float((out - sim).norm()) < 0.9 * float((sim - ref).norm())


@pytest.mark.parametrize("recipe, tc", [("w4a16", True), ("w4a16-g64", True), ("w4a16-g32", False)])
def test_sysq_int4_gemv_tc_puts_the_modules_on_the_tensor_core_kernel(recipe, tc, monkeypatch):
    """SYSQ_INT4_GEMV=tc: the modules hold pack_int4_tc's words where the group is a multiple of 64 (else bytes,
    on the fma kernel); decode (the GEMV) and prefill (tinygemm, repacked from the words) match the twin."""
    monkeypatch.setenv("SYSQ_INT4_GEMV", "tc")
    x = _x()
    ql, lin = twin(recipe, x)
    real = kernels.MODULES[real_backend(ql.weight_spec, ql.act_spec)](ql)
    assert real.gemv and (real.qweight.dtype == torch.int16) == tc and ("(tc," in real.kernel) == tc, real.kernel
    _matches_its_twin(recipe, ql, lin, real)


def test_gemv_compiles_without_a_graph_break():
    gen = torch.Generator().manual_seed(0)
    qw = gemv.pack_nibbles(torch.randint(-8, 8, (32, 256), generator=gen))
    sz = torch.rand(2, 32, 2, generator=gen).to(torch.bfloat16)
    q8 = torch.randint(-128, 128, (32, 256), generator=gen, dtype=torch.int8)
    x = torch.randn(1, 256, generator=gen).to(torch.bfloat16)

    qt = gemv.pack_int4_tc(gemv.int4_codes(qw) - 8)      # the tensor-core kernel's op too

    def f(x):
        return (gemv.int4_gemv(x, qw, sz, 128) + gemv.int8_gemv(x, q8) * 0.01 + gemv.int4_gemv(x, qt, sz, 128)).to(x.dtype)
    got = torch.compile(f, fullgraph=True, backend="aot_eager")(x)    # fake impls trace; fullgraph: no break
    torch.testing.assert_close(got, f(x))


def test_gemv_refuses_many_rows_and_mismatched_shapes():
    qw = torch.zeros(16, 64, dtype=torch.uint8)
    with pytest.raises(ValueError, match="M <= 16"):
        torch.ops.sysq.int4_gemv(torch.zeros(17, 128), qw, torch.ones(1, 16, 2), 128, 1)
    with pytest.raises(ValueError, match="does not match"):
        torch.ops.sysq.int4_gemv(torch.zeros(1, 64), qw, torch.ones(1, 16, 2), 64, 1)


@pytest.mark.parametrize("m, n, k", [(1, 48, 256), (3, 40, 384), (2, 17, 1024)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_int8_gemv_with_the_epilogue_in_the_kernel_equals_the_partial_sums_scaled_after(m, n, k, dtype):
    gen = torch.Generator().manual_seed(m + n)
    q = torch.randint(-128, 128, (n, k), generator=gen, dtype=torch.int8)
    x = torch.randn(m, k, generator=gen).to(dtype)
    scale = torch.rand(n, generator=gen) * 0.01
    got = torch.ops.sysq.int8_gemv_scaled(x, q, scale)
    assert got.dtype == dtype and got.shape == (m, n)
    assert torch.equal(got, (torch.ops.sysq.int8_gemv(x, q, 1).sum(0) * scale).to(dtype))   # same ops, same order
    s = gemv.split_k(m, n, k // 512)                        # the wrapper: the scaled op unless K is split
    want = got if s == 1 else (torch.ops.sysq.int8_gemv(x, q, s).sum(0) * scale).to(dtype)
    assert torch.equal(gemv.int8_gemv_scaled(x, q, scale), want)


def test_fused_projections_on_the_gemv_give_the_unfused_logits_and_tokens():
    import copy
    from sysq.quant import convert, quantize
    from sysq.quant.fuse import GatedMLP, groups
    from tiny_models import tiny_model
    for recipe in ("w8a16",):    # the int4 GEMV (off by default on CUDA) takes the same stacked codes
        m = tiny_model("llama", layers=1)     # one layer has every fused group; each layer costs ~20 s here
        quantize(m, recipe)
        real, fused = copy.deepcopy(m), copy.deepcopy(m)
        convert(real)
        convert(fused, fuse=True)
        assert all(g.fused.gemv for g in groups(fused))
        ids = torch.randint(3, 300, (1, 3), generator=torch.Generator().manual_seed(0))
        kw = dict(max_new_tokens=2, do_sample=False, cache_implementation="static", pad_token_id=0)
        assert all(isinstance(layer.mlp, GatedMLP) and layer.mlp.silu for layer in fused.model.layers)
        with torch.no_grad():
            # every row count here runs the GEMV; the hidden size (64) gives one K slice: the same sums in order,
            # but down's SiLU runs in its GEMV's prologue (exp-based sigmoid: float rounding apart from torch's)
            want = real(ids).logits
            torch.testing.assert_close(fused(ids).logits, want, rtol=1e-5, atol=1e-5)
            assert torch.equal(fused.generate(ids, **kw), real.generate(ids, **kw))
            with_hook = copy.deepcopy(fused)       # a hook on down (rotate's online Hadamard) must see its input
            seen = []
            with_hook.model.layers[0].mlp.down_proj.register_forward_pre_hook(lambda mod, a: seen.append(a[0].shape))
            torch.testing.assert_close(with_hook(ids).logits, want, rtol=1e-5, atol=1e-5)
            assert seen == [(1, 3, 128)]


@pytest.mark.parametrize("prologue", [False, True])
def test_compiled_fused_int8_decode_runs_the_epilogue_in_the_gemv(monkeypatch, prologue):
    """Inductor's CPU code for a fused one-token forward: each GEMV is the scaled op (no partial sums, no kernel
    for the scale and cast), one per fused group; with the gated prologue on, down's takes SiLU(gate) * up too."""
    import copy
    from torch._inductor.utils import run_and_get_code
    from sysq.quant import convert, gemv, quantize
    from tiny_models import tiny_model
    monkeypatch.setattr(gemv, "GATED_PROLOGUE", prologue)
    m = tiny_model("llama", layers=1)
    quantize(m, "w8a16")
    fused = copy.deepcopy(m)
    convert(fused, fuse=True)
    ids = torch.tensor([[5]])
    with torch.no_grad():
        want = fused(ids).logits
        step = torch.compile(fused.forward, fullgraph=True)
        got, codes = run_and_get_code(lambda: step(input_ids=ids).logits)
    code = "\n".join(codes)
    assert code.count("torch.ops.sysq.int8_gemv_scaled.default(") == 4 - prologue     # q/k/v, o, gate/up (, down)
    assert code.count("torch.ops.sysq.int8_gemv_gated_scaled.default(") == prologue   # down, SiLU(gate) * up inside
    assert "torch.ops.sysq.int8_gemv.default(" not in code
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_a_tuned_table_sets_the_split_and_the_launch_config(tmp_path, monkeypatch):
    import json
    table = {"int8": {"1024x40": dict(SPLIT_K=2, BLOCK_N=8, BLOCK_K=512, num_warps=4, num_stages=2)},
             "int4": {"512x48": dict(SPLIT_K=2, BLOCK_N=32, GPC=1, num_warps=4, num_stages=2)}}
    (tmp_path / "t.json").write_text(json.dumps(table))
    monkeypatch.setattr(gemv, "_ACTIVE", gemv.load_table(str(tmp_path / "t.json")))   # what use_table sets
    assert gemv.tuned("int8", 1, 1024, 40)["BLOCK_K"] == 512 and gemv.tuned("int8", 2, 1024, 40) is None
    assert gemv._split("int8", 1, 1024, 40, 8) == 2 and gemv._split("int8", 1, 1024, 48, 8) == gemv.split_k(1, 48, 8)
    gen = torch.Generator().manual_seed(5)
    q = torch.randint(-128, 128, (40, 1024), generator=gen, dtype=torch.int8)
    s = torch.rand(40, generator=gen) + 0.5
    x = torch.randn(1, 1024, generator=gen).to(torch.bfloat16)
    ref = (x.float() @ q.float().t()) * s
    torch.testing.assert_close(gemv.int8_gemv_scaled(x, q, s).float(), ref, rtol=1e-2, atol=1e-2 * float(ref.abs().max()))
    codes = torch.randint(-8, 8, (48, 512), generator=gen)
    qw, sz = gemv.pack_nibbles(codes), torch.randn(4, 48, 2, generator=gen).to(torch.bfloat16)
    ref4 = x[:, :512].float() @ gemv.dequantize_int4(qw, sz, 128).t()
    y = gemv.int4_gemv(x[:, :512].contiguous(), qw, sz, 128)
    torch.testing.assert_close(y, ref4, rtol=1e-5, atol=1e-4 * float(ref4.abs().max()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gated_gemv_applies_silu_gate_times_up_in_its_prologue(dtype):
    gen = torch.Generator().manual_seed(11)
    n, k = 40, 512
    q = torch.randint(-128, 128, (n, k), generator=gen, dtype=torch.int8)
    scale = torch.rand(n, generator=gen) * 0.01 + 0.001
    gu = (torch.randn(2, 2 * k, generator=gen) * 3).to(dtype)
    h = (torch.nn.functional.silu(gu[:, :k].float()) * gu[:, k:].float()).to(dtype)   # what inductor's kernel stores
    want = gemv.int8_gemv_scaled(h, q, scale)
    got = torch.ops.sysq.int8_gemv_gated_scaled(gu, q, scale)
    assert got.dtype == dtype and got.shape == (2, n)
    # the same sums of the same (rounded) inputs, up to the sigmoid's last bit (exp formula vs torch's)
    tol = 1e-5 if dtype == torch.float32 else 2 ** -7
    torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol * float(want.float().abs().max()))
    with pytest.raises(ValueError, match="does not match"):
        torch.ops.sysq.int8_gemv_gated_scaled(gu[:, :k].contiguous(), q, scale)


def test_the_fma_and_tc_int4_gemvs_keep_fp32_accuracy_next_to_a_massive_activation():
    """The fma kernel sums f * x' = x' + u x (x' = 256 x or 16 x) and subtracts the x' sum per group: a
    cancellation, bounded here with a channel of 25,000 beside channels near 1 (SmolLM2's massive activations)."""
    gen = torch.Generator().manual_seed(3)
    n, k, g = 40, 1024, 128
    qw = gemv.pack_nibbles(torch.randint(-8, 8, (n, k), generator=gen))
    sz = (torch.rand(k // g, n, 2, generator=gen) * 0.02).to(torch.bfloat16)
    x = torch.randn(1, k, generator=gen)
    x[0, 7] = 24926.0
    x = x.to(torch.bfloat16)
    ref = x.double() @ gemv.dequantize_int4(qw, sz, g).double().t()
    got = {}
    for kernel in gemv.INT4_KERNELS:
        os.environ["SYSQ_INT4_GEMV"] = kernel
        try:
            got[kernel] = torch.ops.sysq.int4_gemv(x, qw, sz, g, 1).sum(0).double()
        finally:
            del os.environ["SYSQ_INT4_GEMV"]
    # the tensor-core kernel sums (1 + u/16) x and subtracts 24 X per group: a cancellation of ~5x
    got["tc"] = torch.ops.sysq.int4_tc_gemv(x, gemv.pack_int4_tc(gemv.int4_codes(qw) - 8), sz, g, 1).sum(0).double()
    err = {kk: float((v - ref).abs().max() / ref.abs().max()) for kk, v in got.items()}
    # the cancellation costs the fma kernel a few bits (4e-6 here, 1e-7 for nibble): still ~500x below the
    # rounding of its bf16 output (2^-9)
    assert err["nibble"] < 1e-6 and err["fma"] < 1e-5 and err["tc"] < 1e-5, err


def test_the_table_picks_the_int4_kernel_per_shape_or_keeps_tinygemm(tmp_path, monkeypatch):
    import json
    table = {"int4": {"512x48": dict(KERNEL="fma", SPLIT_K=2, BLOCK_N=8, GPC=2, num_warps=1, num_stages=1),
                      "512x40": dict(SPLIT_K=1, BLOCK_N=16, GPC=2, num_warps=4, num_stages=2),
                      "256x48": dict(KERNEL="tinygemm")}}
    (tmp_path / "t.json").write_text(json.dumps(table))
    monkeypatch.setattr(gemv, "_ACTIVE", gemv.load_table(str(tmp_path / "t.json")))
    monkeypatch.delenv("SYSQ_GEMV", raising=False)
    assert gemv.int4_kernel(512, 48) == "fma" and gemv.int4_kernel(512, 40) == "nibble"   # no KERNEL: older sweeps
    assert gemv.int4_gemv_for("cuda", 512, 48) and not gemv.int4_gemv_for("cuda", 256, 48)
    assert gemv.int4_gemv_for("cuda", 1024, 48) == gemv.available("cuda", "int4")           # not named: as before
    monkeypatch.setenv("SYSQ_INT4_GEMV", "dp4a")
    with pytest.raises(Exception, match="SYSQ_INT4_GEMV"):
        gemv.int4_kernel(1024, 48)
    monkeypatch.delenv("SYSQ_INT4_GEMV")
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(1, 512, generator=gen).to(torch.bfloat16)
    for n in (48, 40):      # each named config runs (split, block, kernel from the table)
        qw = gemv.pack_nibbles(torch.randint(-8, 8, (n, 512), generator=gen))
        sz = torch.randn(4, n, 2, generator=gen).to(torch.bfloat16)
        ref = x.float() @ gemv.dequantize_int4(qw, sz, 128).t()
        torch.testing.assert_close(gemv.int4_gemv(x, qw, sz, 128), ref, rtol=1e-5, atol=1e-4 * float(ref.abs().max()))


TC_SHAPES = [(1, 48, 256, 64), (6, 40, 512, 128), (16, 24, 512, 64), (1, 17, 384, 128)]


# every shape and split in bf16; fp16 (the other unpacking constants) on every shape unsplit
@pytest.mark.parametrize("m, n, k, g, split, dtype",
                         [(*shape, s, torch.bfloat16) for shape in TC_SHAPES for s in (1, 2, 4)]
                         + [(*shape, 1, torch.float16) for shape in TC_SHAPES])
def test_int4_tc_gemv_equals_the_dequantized_matmul(m, n, k, g, split, dtype):
    """The tensor-core kernel on pack_int4_tc's layout: every row count up to 16 in one tile, groups of 64 / 128
    (384: a K that leaves the last split slice part empty), N not a multiple of the block."""
    gen = torch.Generator().manual_seed(m * n + split + g)
    codes = torch.randint(-8, 8, (n, k), generator=gen)
    qw = gemv.pack_int4_tc(codes)
    assert qw.dtype == torch.int16 and qw.shape == (n, k // 4)
    assert torch.equal(gemv.unpack_int4_tc(qw) - 8, codes)                          # round trip
    assert torch.equal(gemv.int4_codes(qw), gemv.int4_codes(gemv.pack_nibbles(codes)))
    sz = torch.randn(k // g, n, 2, generator=gen).to(dtype)
    x = torch.randn(m, k, generator=gen).to(dtype)
    ref = x.double() @ gemv.dequantize_int4(qw, sz, g).double().t()
    y = torch.ops.sysq.int4_tc_gemv(x, qw, sz, g, split)
    assert y.shape == (split, m, n) and y.dtype == torch.float32
    torch.testing.assert_close(y.sum(0).double(), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    if split == 1:     # the wrapper takes the layout by its dtype
        torch.testing.assert_close(gemv.int4_gemv(x, qw, sz, g).double(), ref, rtol=1e-5,
                                   atol=1e-5 * float(ref.abs().max()))


def test_int4_tc_gemv_refuses_what_its_layout_cannot_take():
    qw = gemv.pack_int4_tc(torch.zeros(16, 128, dtype=torch.int64))
    x = torch.zeros(1, 128, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="multiple of 64"):
        torch.ops.sysq.int4_tc_gemv(x, qw, torch.ones(4, 16, 2, dtype=torch.bfloat16), 32, 1)
    with pytest.raises(ValueError, match="bf16 or fp16"):
        torch.ops.sysq.int4_tc_gemv(x.float(), qw, torch.ones(1, 16, 2), 128, 1)
    with pytest.raises(ValueError, match="not a multiple"):
        gemv.pack_int4_tc(torch.zeros(4, 96, dtype=torch.int64))
