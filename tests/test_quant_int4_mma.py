"""The CUDA int4 GEMV (csrc/int4_mma.cu): its layout on any machine, the kernel itself where CUDA builds it."""
import pytest
import torch

from sysq.quant import gemv


@pytest.mark.parametrize("n,k", [(16, 64), (48, 256), (32, 1024)])
def test_pack_int4_mma_round_trips(n, k):
    codes = torch.randint(-8, 8, (n, k), generator=torch.Generator().manual_seed(n + k))
    q = gemv.pack_int4_mma(codes)
    assert q.dtype == torch.int32 and q.shape == (n, k // 8)
    assert torch.equal(gemv.unpack_int4_mma(q), codes.int() + 8)
    assert torch.equal(gemv.int4_codes(q), codes.int() + 8)      # the modules' one unpacking entry point


def test_pack_int4_mma_refuses_shapes_the_kernel_cannot_tile():
    with pytest.raises(ValueError, match="multiple of 16"):
        gemv.pack_int4_mma(torch.zeros(24, 64, dtype=torch.int32))
    with pytest.raises(ValueError, match="of 64"):
        gemv.pack_int4_mma(torch.zeros(16, 96, dtype=torch.int32))


def _fragments_product(q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """What the kernel computes, lane by lane, from PTX's mma.m16n8k16 fragment layout (row-major A: lane (g, c)
    holds rows g, g + 8 at columns 2c, 2c + 1 and 2c + 8, 2c + 9; B: rows 2c, 2c + 1 and 2c + 8, 2c + 9 of column
    g), for one tile of 16 rows and M = 1: sum over chunks and k16 steps of (A - 8) @ B."""
    n, k = q.shape[0], q.shape[1] * 8
    words = (q.to(torch.int64) & 0xFFFFFFFF).reshape(n // 16, k // 64, 32, 4)
    y = torch.zeros(n, dtype=torch.float64)
    for t in range(n // 16):
        for ch in range(k // 64):
            xs = x[ch * 64:(ch + 1) * 64].double()
            for s in range(4):
                a, b = torch.zeros(16, 16, dtype=torch.float64), torch.zeros(16, dtype=torch.float64)
                for lane in range(32):
                    g, c = divmod(lane, 4)
                    w = int(words[t, ch, lane, s])
                    for p in range(4):     # register p: rows g + 8 (p % 2), columns 2c + 8 (p // 2) + {0, 1}
                        row, col = g + 8 * (p % 2), 2 * c + 8 * (p // 2)
                        a[row, col], a[row, col + 1] = (w >> 4 * p) & 15, (w >> 16 + 4 * p) & 15
                    lx = xs[16 * c:16 * c + 16]    # lane c's contiguous x: pairs 2s, 2s + 1 are its b registers
                    b[2 * c:2 * c + 2], b[2 * c + 8:2 * c + 10] = lx[4 * s:4 * s + 2], lx[4 * s + 2:4 * s + 4]
                y[16 * t:16 * t + 16] += (a - 8) @ b
    return y


def test_the_layout_feeds_the_mma_fragments_the_right_codes():
    codes = torch.randint(-8, 8, (32, 128), generator=torch.Generator().manual_seed(1))
    x = torch.randn(128, generator=torch.Generator().manual_seed(2))
    y = _fragments_product(gemv.pack_int4_mma(codes), x)
    torch.testing.assert_close(y, codes.double() @ x.double())


def _cuda_kernel():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from sysq.quant import _gemv_cuda
    if not _gemv_cuda.builds():
        pytest.skip("the CUDA extension does not build here")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,k,n,group", [(1, 4096, 4096, 128), (1, 14336, 4096, 128), (3, 512, 48, 64),
                                         (8, 1024, 256, 256), (1, 576, 1536, 64)])
def test_the_cuda_kernel_matches_its_dequantized_weight(dtype, m, k, n, group):
    _cuda_kernel()
    gen = torch.Generator().manual_seed(k + n)
    codes = torch.randint(-8, 8, (n, k), generator=gen)
    sz = torch.stack([torch.rand(k // group, n, generator=gen) * 0.02 + 1e-3,
                      torch.randn(k // group, n, generator=gen) * 0.01], dim=-1).to(dtype)
    x = (torch.randn(m, k, generator=gen) * 2).to(dtype)
    q = gemv.pack_int4_mma(codes).cuda()
    from sysq.quant import _gemv_cuda
    assert _gemv_cuda.extension().configs() == len(gemv.MMA_CONFIGS)
    ref = x.double() @ gemv.dequantize_int4(gemv.pack_nibbles(codes), sz, group).double().t()
    for config in range(len(gemv.MMA_CONFIGS)):
        y = torch.ops.sysq.int4_mma_gemv(x.cuda(), q, sz.cuda(), group, config)
        assert y.dtype == dtype and y.shape == (m, n)
        err = ((y.double().cpu() - ref).abs().max() / ref.abs().max()).item()
        assert err < 2 ** -7, (config, err)     # fp32 accumulation, the output rounded to x's dtype


def test_an_int4_module_on_the_mma_kernel_matches_its_simulated_twin(monkeypatch):
    _cuda_kernel()
    from test_quant_kernels import twin
    from sysq.quant.kernels import Int4WOLinear
    monkeypatch.setenv("SYSQ_INT4_GEMV", "mma")
    g = torch.Generator().manual_seed(0)
    ql, _ = twin("w4a16-g128", torch.randn(4, 512, generator=g), in_f=512, out_f=256)
    ql = ql.cuda()
    real = Int4WOLinear(ql)
    assert "CUDA GEMV (mma" in real.kernel and real.qweight.dtype == torch.int32
    for rows in (1, 5, 12, 27):     # the kernel (<= 16 rows, 8 a launch), then tinygemm on the repacked bytes
        x = torch.randn(rows, 512, generator=g).cuda()
        with torch.no_grad():
            ref, y = ql(x), real(x.to(torch.bfloat16))
        err = ((y.float() - ref).abs().max() / ref.abs().max()).item()
        assert err < 2 ** -6, (rows, err)
