"""The Triton kernels behind sysq.quant.gemv (imported on first use: Triton is optional).

Grid (M, N / BLOCK_N, SPLIT_K): a program computes BLOCK_N outputs of one row of x over one slice of K and
writes float32 partial sums. Weights are read as int32 words (8 int4 or 4 int8 codes); a code c becomes a
float by OR-ing it into the mantissa of 2^23 and subtracting 2^23 (+ the code offset): exact, and two integer
ops where a conversion instruction would run at 1/8 of the FMA rate. Accumulators stay 2-D/3-D tiles in
registers and are reduced once at the end; the int4 group scale multiplies a tile of per-group sums.
"""
from __future__ import annotations

import functools
import os

import triton
import triton.language as tl

MAGIC = tl.constexpr(0x4B000000)         # the bits of 2^23 in float32: OR a code < 2^23 into the mantissa
ONE = tl.constexpr(0x3F800000)           # the bits of 1.0f


@triton.jit
def _int4_program(N, K, G: tl.constexpr, BLOCK_N: tl.constexpr, GPC: tl.constexpr, SPLIT_K: tl.constexpr):
    """This program's row of x, slice of K, output rows (and their mask), word offsets in a group, chunks."""
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    per_split = (tl.cdiv(K // G, GPC) + SPLIT_K - 1) // SPLIT_K
    return tl.program_id(0), tl.program_id(2), rn, rn < N, tl.arange(0, G // 8), per_split


@triton.jit
def _int4_tiles(w_ptr, sz_ptr, rn, n_mask, rw, chunk, N, K, G: tl.constexpr, GPC: tl.constexpr):
    """Chunk `chunk` of K (GPC groups): the group indices, their mask (false past K), the int32 words
    [BLOCK_N, GPC, G / 8] and the float32 scales and zeros [BLOCK_N, GPC] of rows rn."""
    g = chunk * GPC + tl.arange(0, GPC)
    g_mask = g < K // G
    w = tl.load(w_ptr + rn[:, None, None] * (K // 8) + g[None, :, None] * (G // 8) + rw[None, None, :],
                mask=n_mask[:, None, None] & g_mask[None, :, None], other=0)
    s_off = g[None, :] * (N * 2) + rn[:, None] * 2
    s_mask = n_mask[:, None] & g_mask[None, :]
    scale = tl.load(sz_ptr + s_off, mask=s_mask, other=0).to(tl.float32)
    zero = tl.load(sz_ptr + s_off + 1, mask=s_mask, other=0).to(tl.float32)
    return g, g_mask, w, scale, zero


def _int4_kernel(x_ptr, w_ptr, sz_ptr, out_ptr, M, N, K, stride_xm,
                 G: tl.constexpr, BLOCK_N: tl.constexpr, GPC: tl.constexpr, SPLIT_K: tl.constexpr):
    # w: int32 [N, K / 8]; word j of row n, nibble i (bits 4i..4i+3) holds k = 8j + (i ^ 1) (bytes are
    # little-endian and each byte holds the even k in its high nibble). GPC groups of G codes per iteration.
    W: tl.constexpr = G // 8
    pid_m, pid_s, rn, n_mask, rw, per_split = _int4_program(N, K, G, BLOCK_N, GPC, SPLIT_K)
    acc = tl.zeros([BLOCK_N, GPC, W], dtype=tl.float32)
    acc_z = tl.zeros([BLOCK_N, GPC], dtype=tl.float32)
    x_row = x_ptr + pid_m * stride_xm
    for c in range(0, per_split):
        g, g_mask, w, scale, zero = _int4_tiles(w_ptr, sz_ptr, rn, n_mask, rw, pid_s * per_split + c, N, K, G, GPC)
        k0 = g[:, None] * G + rw[None, :] * 8
        part = tl.zeros([BLOCK_N, GPC, W], dtype=tl.float32)
        x_sum = tl.zeros([GPC, W], dtype=tl.float32)
        for i in tl.static_range(8):
            xi = tl.load(x_row + k0 + (i ^ 1), mask=g_mask[:, None], other=0).to(tl.float32)
            f = (((w >> (4 * i)) & 0xF) | MAGIC).to(tl.float32, bitcast=True) - 8388616.0   # u - 8
            part += f * xi[None, :, :]
            x_sum += xi
        acc += part * scale[:, :, None]
        acc_z += zero * tl.sum(x_sum, axis=1)[None, :]
    y = tl.sum(tl.sum(acc, axis=2), axis=1) + tl.sum(acc_z, axis=1)
    tl.store(out_ptr + (pid_s * M + pid_m) * N + rn, y, mask=n_mask)


def _int4_fma_kernel(x_ptr, w_ptr, sz_ptr, out_ptr, M, N, K, stride_xm,
                     G: tl.constexpr, BLOCK_N: tl.constexpr, GPC: tl.constexpr, SPLIT_K: tl.constexpr):
    # _int4_kernel's layout and grid at under half its instructions per weight byte (the SASS for sm_90, counted
    # by scripts/gemv_sass.py). Per code one LOP3 and one FMA: a nibble moved to bits 15..18 or 19..22 (one
    # shift per two codes) and OR-ed into 1.0f is f = 1 + u/256 or 1 + u/16, exact; with x' = 256 x or 16 x,
    # f x' = x' + u x. Per group (scale s, zero z; X = sum x, c = 8 X + sum x'):
    #   sum_k ((u_k - 8) s + z) x_k = s * (sum_k f_k x'_k - c) + z * X
    # so the chain starts at -c, and the scale and zero are two FMAs per (row, word). The x side (loads,
    # x', c, X) is per word, shared by the BLOCK_N rows a thread holds: with GPC >= 8 * num_warps the threads
    # (W / 4 per group, 4 words each) all lie along K and each holds every row of its words.
    W: tl.constexpr = G // 8
    pid_m, pid_s, rn, n_mask, rw, per_split = _int4_program(N, K, G, BLOCK_N, GPC, SPLIT_K)
    acc = tl.zeros([BLOCK_N, GPC, W], dtype=tl.float32)
    x_row = x_ptr + pid_m * stride_xm
    for it in range(0, per_split):
        g, g_mask, w, scale, zero = _int4_tiles(w_ptr, sz_ptr, rn, n_mask, rw, pid_s * per_split + it, N, K, G, GPC)
        k0 = g[:, None] * G + rw[None, :] * 8
        xm = g_mask[:, None]
        # x of the word's 8 codes: x_k for k = 8j + t (nibble t ^ 1); the x side is shared by the BLOCK_N rows
        x0 = tl.load(x_row + k0 + 0, mask=xm, other=0).to(tl.float32)
        x1 = tl.load(x_row + k0 + 1, mask=xm, other=0).to(tl.float32)
        x2 = tl.load(x_row + k0 + 2, mask=xm, other=0).to(tl.float32)
        x3 = tl.load(x_row + k0 + 3, mask=xm, other=0).to(tl.float32)
        x4 = tl.load(x_row + k0 + 4, mask=xm, other=0).to(tl.float32)
        x5 = tl.load(x_row + k0 + 5, mask=xm, other=0).to(tl.float32)
        x6 = tl.load(x_row + k0 + 6, mask=xm, other=0).to(tl.float32)
        x7 = tl.load(x_row + k0 + 7, mask=xm, other=0).to(tl.float32)
        x_sum = ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7))
        # odd k: nibbles 0, 2, 4, 6 (f = 1 + u/256, x' = 256 x); even k: 1, 3, 5, 7 (f = 1 + u/16, x' = 16 x)
        c = (264.0 * ((x1 + x3) + (x5 + x7)) + 24.0 * ((x0 + x2) + (x4 + x6)))[None, :, :]   # 8 X + sum x'
        sh = w << 15
        part = _nib(sh, 0x00078000) * (256.0 * x1)[None, :, :] - c
        part += _nib(sh, 0x00780000) * (16.0 * x0)[None, :, :]
        sh = w << 7
        part += _nib(sh, 0x00078000) * (256.0 * x3)[None, :, :]
        part += _nib(sh, 0x00780000) * (16.0 * x2)[None, :, :]
        sh = w >> 1
        part += _nib(sh, 0x00078000) * (256.0 * x5)[None, :, :]
        part += _nib(sh, 0x00780000) * (16.0 * x4)[None, :, :]
        sh = w >> 9
        part += _nib(sh, 0x00078000) * (256.0 * x7)[None, :, :]
        part += _nib(sh, 0x00780000) * (16.0 * x6)[None, :, :]
        acc += part * scale[:, :, None]           # two FMAs per (row, word): scale, then zero
        acc += zero[:, :, None] * x_sum[None, :, :]
    y = tl.sum(tl.sum(acc, axis=2), axis=1)
    tl.store(out_ptr + (pid_s * M + pid_m) * N + rn, y, mask=n_mask)


@triton.jit
def _nib(sh, mask):
    # the nibble under mask (bits 15..18 or 19..22) OR-ed into 1.0f: 1 + u / 256 or 1 + u / 16, exact
    return ((sh & mask) | ONE).to(tl.float32, bitcast=True)


def _int4_tc_kernel(x_ptr, w_ptr, sz_ptr, out_ptr, M, N, K, stride_xm,
                    G: tl.constexpr, BLOCK_N: tl.constexpr, GPI: tl.constexpr, SPLIT_K: tl.constexpr,
                    ASM: tl.constexpr = False):
    # The multiply on tensor cores: per code only the unpacking (a shift and a LOP3; no conversion, no FMA).
    # w: int16 [N, K / 4] (gemv.pack_int4_tc): in each block of 64 codes (16 words), nibble t of word i holds
    # k = 16 t + i, so nibble plane t of a group's words [BLOCK_N, G / 4] is the weight at the k's 64 b + 16 t + i
    # (b = word // 16, i = word % 16): a dot operand of the words' own shape, no interleaving (the x tile is loaded
    # at those k's). A nibble u moved to the top 4 mantissa bits of 1.0 (bf16: bits 3..6, fp16: bits 6..9) is
    # f = 1 + u / 16 exactly, in x's dtype. One grid axis over N (all M <= 16 rows of x in the dot's other side,
    # padded to 16), split-K on the third. Per group (scale s, zero z, X = sum of x over it):
    #   sum_k ((u_k - 8) s + z) x_k = 16 s * dot(f, x) + (z - 24 s) X
    # four dots of K = G / 4 chained into the group's fp32 partial, then scaled. (1 + u/16 rather than 128 + u
    # in the low bits: the X term that cancels is ~5x the result, not ~30x.)
    WG: tl.constexpr = G // 4                       # int16 words per group
    DT: tl.constexpr = x_ptr.dtype.element_ty
    if DT == tl.float16:
        BASE: tl.constexpr = 6                      # the nibble's bits in f
        NMASK: tl.constexpr = 0x03C0
        ONE16: tl.constexpr = 0x3C00
    else:
        BASE: tl.constexpr = 3
        NMASK: tl.constexpr = 0x0078
        ONE16: tl.constexpr = 0x3F80
    pid_n = tl.program_id(1)
    pid_s = tl.program_id(2)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = tl.arange(0, 16)
    # no load masks: rows past N and x rows past M read the last real one (their outputs are not stored), and a
    # group past K (split-K's last slice) reads the last group with its scale and zero zeroed
    w_row = w_ptr + tl.minimum(rn, N - 1)[:, None] * (K // 4) + tl.arange(0, WG)[None, :]
    x_col = x_ptr + tl.minimum(rm, M - 1)[None, :] * stride_xm
    rw = tl.arange(0, WG)
    kx = (rw // 16) * 64 + rw % 16                  # word -> k (of plane 0) within the group
    sz_row = sz_ptr + tl.minimum(rn, N - 1) * 2
    groups = K // G
    per_split = (tl.cdiv(groups, GPI) + SPLIT_K - 1) // SPLIT_K
    acc = tl.zeros([BLOCK_N, 16], dtype=tl.float32)
    for c in range(0, per_split):
        for gi in tl.static_range(GPI):
            g = (pid_s * per_split + c) * GPI + gi
            live = (g < groups).to(tl.float32)
            g = tl.minimum(g, groups - 1)
            w = tl.load(w_row + g * WG)
            scale = tl.load(sz_row + g * (N * 2)).to(tl.float32) * live
            zero = tl.load(sz_row + g * (N * 2) + 1).to(tl.float32) * live
            part = tl.zeros([BLOCK_N, 16], dtype=tl.float32)
            x_all = tl.zeros([WG, 16], dtype=tl.float32)
            for t in tl.static_range(4):
                xt = tl.load(x_col + (g * G + 16 * t + kx)[:, None])                     # [WG, 16]: x^T
                if ASM:
                    f = _tc_unpack_asm(w, t, DT)
                else:
                    f = _tc_unpack(w, BASE - 4 * t, NMASK, ONE16, DT)                    # 1 + u / 16
                part = tl.dot(f, xt, part)
                x_all += xt.to(tl.float32)
            x_sum = tl.sum(x_all, axis=0)           # X: one reduction per group
            acc += part * (16.0 * scale)[:, None]                            # two FMAs per element
            acc += (zero - 24.0 * scale)[:, None] * x_sum[None, :]
    tl.store(out_ptr + (pid_s * M + rm[None, :]) * N + rn[:, None], acc, mask=(rn < N)[:, None] & (rm < M)[None, :])


@triton.jit
def _tc_unpack(w, SH: tl.constexpr, NMASK: tl.constexpr, ONE16: tl.constexpr, DT: tl.constexpr):
    # int16 words -> the nibble shifted by SH (to the top mantissa bits) OR-ed into 1.0 of dtype DT: 1 + u / 16
    if SH >= 0:
        v = w << SH
    else:
        v = w >> -SH
    return ((v & NMASK) | ONE16).to(DT, bitcast=True)


def _tc_asm(t: int, base: int, mask16: int, one16: int) -> str:
    """PTX for four int16 words in two 32-bit registers ($2, $3) -> their nibble-t codes u as 1 + u/16 in two
    16-bit floats per register ($0, $1): per two codes one shift (the nibble to bits base..base+3; what crosses
    into the other half is masked off) and one LOP3 ((a & mask) | one, 0xEA)."""
    sh = base - 4 * t
    op = f"shl.b32 a, $2, {sh};\nshl.b32 b, $3, {sh};" if sh >= 0 else f"shr.u32 a, $2, {-sh};\nshr.u32 b, $3, {-sh};"
    m, o = mask16 * 0x10001, one16 * 0x10001
    return f"{{ .reg .b32 a, b;\n{op}\nlop3.b32 $0, a, {m}, {o}, 0xEA;\nlop3.b32 $1, b, {m}, {o}, 0xEA; }}"


# Triton's code reads globals only as constexprs: the strings by plane t, bf16's then fp16's
_TC_ASM = tl.constexpr(tuple(_tc_asm(t, 3, 0x0078, 0x3F80) for t in range(4)) +
                       tuple(_tc_asm(t, 6, 0x03C0, 0x3C00) for t in range(4)))


@triton.jit
def _tc_unpack_asm(w, t: tl.constexpr, dtype: tl.constexpr):
    # _int4_tc_kernel's unpacking in inline PTX (pack=4): GPU only, the interpreter cannot run it
    if dtype == tl.float16:
        f = tl.inline_asm_elementwise(_TC_ASM[t + 4], "=r,=r,r,r", [w], dtype=tl.float16, is_pure=True, pack=4)
    else:
        f = tl.inline_asm_elementwise(_TC_ASM[t], "=r,=r,r,r", [w], dtype=tl.bfloat16, is_pure=True, pack=4)
    return f


def _int8_kernel(x_ptr, w_ptr, out_ptr, scale_ptr, M, N, K, stride_xm,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, SCALED: tl.constexpr,
                 GATED: tl.constexpr = False):
    # SCALED (SPLIT_K == 1): the epilogue in the kernel, y * scale[n] stored in out's dtype (no kernel after it)
    # GATED: x rows are [gate | up] (2K wide) and the input is silu(gate) * up, rounded to x's dtype as the
    # separate pointwise kernel would store it (the prologue of a gated MLP's down projection)
    # w: int32 [N, K / 4]; byte t of word j holds k = 4j + t. XOR 0x80 makes each byte q + 128 in [0, 255].
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_s = tl.program_id(2)
    WK: tl.constexpr = BLOCK_K // 4
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = rn < N
    rw = tl.arange(0, WK)
    words = K // 4
    chunks = (K + BLOCK_K - 1) // BLOCK_K
    per_split = (chunks + SPLIT_K - 1) // SPLIT_K
    acc = tl.zeros([BLOCK_N, WK], dtype=tl.float32)
    x_row = x_ptr + pid_m * stride_xm
    for c in range(0, per_split):
        chunk = pid_s * per_split + c
        j = chunk * WK + rw
        j_mask = j < words              # also false past the last chunk
        w = tl.load(w_ptr + rn[:, None] * words + j[None, :], mask=n_mask[:, None] & j_mask[None, :], other=0)
        w = w ^ -2139062144   # 0x80808080 as int32
        for t in tl.static_range(4):
            xt = tl.load(x_row + j * 4 + t, mask=j_mask, other=0).to(tl.float32)
            if GATED:
                up = tl.load(x_row + K + j * 4 + t, mask=j_mask, other=0).to(tl.float32)
                xt = xt / (1.0 + tl.exp(-xt)) * up
                if x_ptr.dtype.element_ty == tl.bfloat16:
                    xt = _to_bf16_rtne(xt).to(tl.float32)
                elif x_ptr.dtype.element_ty == tl.float16:
                    xt = xt.to(tl.float16).to(tl.float32)
            f = (((w >> (8 * t)) & 0xFF) | MAGIC).to(tl.float32, bitcast=True) - 8388736.0   # q
            acc += f * xt[None, :]
    y = tl.sum(acc, axis=1)
    if SCALED:
        y = y * tl.load(scale_ptr + rn, mask=n_mask, other=0)
        if out_ptr.dtype.element_ty == tl.bfloat16:
            y = _to_bf16_rtne(y)
    tl.store(out_ptr + (pid_s * M + pid_m) * N + rn, y.to(out_ptr.dtype.element_ty), mask=n_mask)


@triton.jit
def _to_bf16_rtne(y):
    # fp32 -> bf16 rounded to nearest even in integer ops: what the GPU's cvt.rn and torch's .to() do, and what
    # Triton's CPU interpreter does not (it truncates), so the tests see the kernel's real numbers
    b = y.to(tl.uint32, bitcast=True)
    b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    r = b.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    return tl.where(y != y, y.to(tl.bfloat16), r)     # NaN stays NaN


# small autotune lists (decode shapes of 7B-70B models: K, N in 1k..128k); the key includes SPLIT_K
INT4_CONFIGS = [triton.Config(dict(BLOCK_N=bn, GPC=gpc), num_warps=w, num_stages=st)
                for bn, gpc, w, st in [(8, 4, 2, 2), (16, 2, 4, 2), (16, 4, 4, 2), (32, 2, 4, 2), (32, 4, 8, 2),
                                       (16, 8, 8, 1), (64, 2, 8, 2)]]
INT8_CONFIGS = [triton.Config(dict(BLOCK_N=bn, BLOCK_K=bk), num_warps=w, num_stages=st)
                for bn, bk, w, st in [(8, 512, 2, 2), (16, 256, 4, 2), (16, 512, 4, 2), (32, 256, 4, 2),
                                      (32, 512, 8, 2), (16, 1024, 8, 1), (64, 256, 8, 2)]]
# the fma kernel wants GPC >= 8 * num_warps (every thread along K, all BLOCK_N rows in each thread)
INT4F_CONFIGS = [triton.Config(dict(BLOCK_N=bn, GPC=gpc), num_warps=w, num_stages=1)
                 for bn, gpc, w in [(8, 32, 4), (8, 16, 2), (4, 32, 4), (8, 64, 8), (16, 16, 2), (4, 16, 2),
                                    (8, 8, 1)]]
# the tensor-core kernel: BLOCK_N >= 16 (a dot's side), GPI groups per trip; the Triton-ops unpacking (ASM=True, its
# inline PTX, is the faster one by its SASS but unmeasured on a GPU: the sweep's grid has it)
INT4TC_CONFIGS = [triton.Config(dict(BLOCK_N=bn, GPI=gpi), num_warps=w, num_stages=st)
                  for bn, gpi, w, st in [(256, 1, 4, 3), (128, 1, 4, 3), (128, 1, 4, 2), (64, 2, 4, 3), (256, 1, 8, 2),
                                         (32, 2, 2, 3)]]
# the interpreter (CPU tests) runs one fixed config, small enough for small shapes
INTERPRET_CONFIG = {"int4": dict(BLOCK_N=16, GPC=2), "int4f": dict(BLOCK_N=8, GPC=2),
                    "int4tc": dict(BLOCK_N=16, GPI=2), "int8": dict(BLOCK_N=16, BLOCK_K=256)}


@functools.lru_cache(maxsize=None)
def kernels() -> dict:
    """{'int4': (autotuned, plain), 'int4f': (...), 'int4tc': (...), 'int8': (...)}; int4f is the fma kernel, int4tc
    the tensor-core one. Under TRITON_INTERPRET=1 (set before triton is first
    imported: the interpreter patches triton.language then) both run on the CPU; there is no autotuning."""
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if interpret:
        _interpreter_dot_reads_bf16()
    out = {}
    for name, body, configs in [("int4", _int4_kernel, INT4_CONFIGS), ("int4f", _int4_fma_kernel, INT4F_CONFIGS),
                                ("int4tc", _int4_tc_kernel, INT4TC_CONFIGS), ("int8", _int8_kernel, INT8_CONFIGS)]:
        key = ["M", "N", "K", "SPLIT_K"] + (["SCALED", "GATED"] if name == "int8" else [])
        out[name] = (None if interpret else triton.autotune(configs, key=key)(triton.jit(body)),
                     triton.jit(body))
    return out


def _interpreter_dot_reads_bf16() -> None:
    """Triton's interpreter (3.x) keeps bf16 as its uint16 bits and its tl.dot multiplies those bits as integers;
    the tensor-core int4 GEMV's dot takes bf16 operands, so under the interpreter the dot first widens them to
    float32 (exact: the bits shifted into the top half), as the GPU's MMA reads them."""
    import numpy as np
    from triton.runtime import interpreter as I
    orig = I.InterpreterBuilder.create_dot
    if getattr(orig, "sysq_bf16", False):
        return

    def f32(h):
        if h.dtype == tl.bfloat16:
            return I.TensorHandle((h.data.astype(np.uint32) << 16).view(np.float32), tl.float32)
        return h

    def create_dot(self, a, b, d, *rest):
        return orig(self, f32(a), f32(b), d, *rest)
    create_dot.sysq_bf16 = True
    I.InterpreterBuilder.create_dot = create_dot

