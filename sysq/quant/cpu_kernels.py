"""The learned step's weight fake quantizer and its SignSGD update in one C pass each on a CPU.

On a 2-core AVX2 CPU the torch ops of learn.py's fake quantizers (about ten passes over the weights forward, nine
back, three for the update) cost ~20 ms of a ~110 ms step. Here: forward reads r, V and writes w; backward recomputes
the codes instead of saving them, writes V's gradient and sums the scale's and zero point's per row; the update
writes V once. Built with the system C compiler on first use (cached under $SYSQ_CACHE/kernels, AVX2 intrinsics
where the CPU has them, a plain loop elsewhere); without a compiler, or with SYSQ_CPU_KERNELS=0, learn.py keeps
its torch ops.

Values: w and V's gradient are the torch ops' to the bit (same IEEE operations, no FMA contraction, round half to
even). The scale's and zero point's row sums use the exact simplifications of the chain rule (the zero point gets
the gradient of the clamped entries only, where the torch chain computes sum(g) - sum(g * s / s)) and another order,
so they differ from the torch path's in the last bits; each row is summed by one thread in a fixed order, so a seed
gives the same result on a machine whatever the thread count.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import torch

log = logging.getLogger(__name__)

SOURCE = r"""
#include <math.h>
#include <stdint.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

/* rows [i0, i1) of r, V, w [rows, n]; scale, zero [rows]. float: w = clamp(rint((r - z) / s + V)) * s + z;
   int: w = (clamp(rint(r / s + V) + z) - z) * s */
void fq_forward(int fz, const float *r, const float *V, const float *scale, const float *zero, int64_t n, int64_t i0,
                int64_t i1, float qmin, float qmax, float *w) {
    for (int64_t i = i0; i < i1; i++) {
        const float s = scale[i], z = zero[i];
        const float *ri = r + i * n, *vi = V + i * n;
        float *wi = w + i * n;
        if (fz) {
            for (int64_t j = 0; j < n; j++) {
                float c = rintf((ri[j] - z) / s + vi[j]);
                c = c < qmin ? qmin : (c > qmax ? qmax : c);
                wi[j] = c * s + z;
            }
        } else {
            for (int64_t j = 0; j < n; j++) {
                float c = rintf(ri[j] / s + vi[j]) + z;
                c = c < qmin ? qmin : (c > qmax ? qmax : c);
                wi[j] = (c - z) * s;
            }
        }
    }
}

/* gt = dL/dV (g * s inside the grid, 0 where clamped); gs, gz: dL/dscale, dL/dzero per row. With d = the unrounded
   code and u = the clamped code (float zero) or code - zero (int zero): dL/ds = sum g * (u - d [inside]),
   dL/dz = sum over clamped entries of g (float zero) or of -g * s (int zero). */
static inline void fq_backward_tail(int fz, const float *ri, const float *vi, const float *gi, float *ti, int64_t j,
                                    int64_t n, float s, float z, float qmin, float qmax, float *b, float *e) {
    for (; j < n; j++) {
        float d = fz ? (ri[j] - z) / s : ri[j] / s;
        float c = rintf(d + vi[j]) + (fz ? 0.f : z);
        float cc = c < qmin ? qmin : (c > qmax ? qmax : c);
        float u = fz ? cc : cc - z;
        int in = c == cc;
        ti[j] = in ? gi[j] * s : 0.f;
        *b += gi[j] * (in ? u - d : u);
        *e += in ? 0.f : gi[j];
    }
}

void fq_backward(int fz, const float *r, const float *V, const float *scale, const float *zero, const float *gw,
                 int64_t n, int64_t i0, int64_t i1, float qmin, float qmax, float *gt, float *gs, float *gz) {
    for (int64_t i = i0; i < i1; i++) {
        const float s = scale[i], z = zero[i];
        const float *ri = r + i * n, *vi = V + i * n, *gi = gw + i * n;
        float *ti = gt + i * n;
        float b = 0.f, e = 0.f;
        int64_t j = 0;
#ifdef __AVX2__
        const __m256 S = _mm256_set1_ps(s), Z = _mm256_set1_ps(z), LO = _mm256_set1_ps(qmin),
                     HI = _mm256_set1_ps(qmax), ZC = _mm256_set1_ps(fz ? 0.f : z), ZD = _mm256_set1_ps(fz ? z : 0.f);
        __m256 B = _mm256_setzero_ps(), E = _mm256_setzero_ps();
        for (; j + 8 <= n; j += 8) {
            __m256 g = _mm256_loadu_ps(gi + j);
            __m256 d = _mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(ri + j), ZD), S);
            __m256 c = _mm256_add_ps(_mm256_round_ps(_mm256_add_ps(d, _mm256_loadu_ps(vi + j)),
                                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), ZC);
            __m256 cc = _mm256_min_ps(_mm256_max_ps(c, LO), HI);
            __m256 u = _mm256_sub_ps(cc, ZC);
            __m256 in = _mm256_cmp_ps(c, cc, _CMP_EQ_OQ);
            _mm256_storeu_ps(ti + j, _mm256_and_ps(in, _mm256_mul_ps(g, S)));
            B = _mm256_add_ps(B, _mm256_mul_ps(g, _mm256_sub_ps(u, _mm256_and_ps(in, d))));
            E = _mm256_add_ps(E, _mm256_andnot_ps(in, g));
        }
        float bl[8], el[8];
        _mm256_storeu_ps(bl, B);
        _mm256_storeu_ps(el, E);
        for (int k = 0; k < 8; k++) { b += bl[k]; e += el[k]; }
#endif
        fq_backward_tail(fz, ri, vi, gi, ti, j, n, s, z, qmin, qmax, &b, &e);
        gs[i] = b;
        gz[i] = fz ? e : -e * s;
    }
}

/* p = clamp(p - lr * sign(g), lo, hi) over [j0, j1) */
void sign_step(float *p, const float *g, int64_t j0, int64_t j1, float lr, float lo, float hi) {
    for (int64_t j = j0; j < j1; j++) {
        float x = p[j] - lr * (float)((g[j] > 0.f) - (g[j] < 0.f));
        p[j] = x < lo ? lo : (x > hi ? hi : x);
    }
}
"""
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-ffp-contract=off", "-shared", "-fPIC"]


@lru_cache(maxsize=1)
def _library():
    if os.environ.get("SYSQ_CPU_KERNELS", "1") == "0":
        return None
    from ..io import atomic_file
    from ..models import cache_dir
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        log.info("no C compiler: the learned step's fake quantizers run as torch ops")
        return None
    tag = hashlib.sha256((SOURCE + " ".join(FLAGS)).encode()).hexdigest()[:16]
    lib = cache_dir() / "kernels" / f"fakequant_{tag}.so"
    if not lib.exists():
        try:
            with atomic_file(lib.with_suffix(".c")) as src:
                src.write_text(SOURCE)
                with atomic_file(lib) as out:
                    subprocess.run([cc, *FLAGS, "-x", "c", str(src), "-o", str(out), "-lm"], check=True,
                                   capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as e:
            log.warning("building the CPU fake-quantization kernels failed (%s); torch ops instead", e)
            return None
    so = ctypes.CDLL(str(lib))
    i32, i64, f, p = ctypes.c_int, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    so.fq_forward.argtypes = [i32, p, p, p, p, i64, i64, i64, f, f, p]
    so.fq_backward.argtypes = [i32, p, p, p, p, p, i64, i64, i64, f, f, p, p, p]
    so.sign_step.argtypes = [p, p, i64, i64, f, f, f]
    return so


def applies(*ts: torch.Tensor) -> bool:
    """The kernels take these tensors: float32, contiguous, on the CPU, and the library built."""
    return (all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in ts)
            and _library() is not None)


@lru_cache(maxsize=None)
def _pool(n: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(n, thread_name_prefix="sysq-fq")


def _split(count: int, call, grain: int) -> None:
    """call(lo, hi) over [0, count) in torch's thread count of contiguous chunks (ctypes drops the GIL)."""
    threads = max(1, min(torch.get_num_threads(), count // grain))
    bounds = [count * k // threads for k in range(threads + 1)]
    if threads == 1:
        call(0, count)
    else:
        list(_pool(threads).map(lambda k: call(bounds[k], bounds[k + 1]), range(threads)))


def fake_quant_forward(float_zero: bool, r, V, scale, zero, qmin: int, qmax: int) -> torch.Tensor:
    rows, n = r.shape
    w = torch.empty_like(r)
    lib, fz = _library(), int(float_zero)
    s, z = scale.contiguous(), zero.contiguous()
    _split(rows, lambda a, b: lib.fq_forward(fz, r.data_ptr(), V.data_ptr(), s.data_ptr(), z.data_ptr(), n, a, b,
                                             float(qmin), float(qmax), w.data_ptr()), 256)
    return w


def fake_quant_backward(float_zero: bool, r, V, scale, zero, gw, qmin: int, qmax: int):
    """(dL/dV, dL/dscale, dL/dzero) for the loss gradient gw of fake_quant_forward's output."""
    rows, n = r.shape
    gw = gw.contiguous()
    gt = torch.empty_like(r)
    gs, gz = torch.empty_like(scale, memory_format=torch.contiguous_format), torch.empty_like(zero, memory_format=torch.contiguous_format)
    lib, fz = _library(), int(float_zero)
    s, z = scale.contiguous(), zero.contiguous()
    _split(rows, lambda a, b: lib.fq_backward(fz, r.data_ptr(), V.data_ptr(), s.data_ptr(), z.data_ptr(),
                                              gw.data_ptr(), n, a, b, float(qmin), float(qmax), gt.data_ptr(),
                                              gs.data_ptr(), gz.data_ptr()), 256)
    return gt, gs, gz


def sign_step_(p: torch.Tensor, g: torch.Tensor, lr: float, lo: float, hi: float) -> None:
    """p <- clamp(p - lr * sign(g), lo, hi) in place (p.sub_(g.sign(), alpha=lr).clamp_(lo, hi) to the bit)."""
    lib = _library()
    _split(p.numel(), lambda a, b: lib.sign_step(p.data_ptr(), g.data_ptr(), a, b, lr, lo, hi), 1 << 16)
