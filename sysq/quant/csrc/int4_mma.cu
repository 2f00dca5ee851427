// int4 weight-only GEMV for decode (M <= 8 rows) on tensor cores, Marlin's idea without its pipeline: the codes are
// stored in the order of mma.m16n8k16's A fragments (sysq/quant/gemv.py pack_int4_mma), so each lane's one 16-byte
// load is its four fragments of a 16-row x 64-k tile, and unpacking is one shift and one LOP3 per two codes (the
// nibble OR-ed into the mantissa of bf16 128.0: 128 + u). No shared memory in the loop.
//
//   y[m, n] = sum_k x[m, k] * ((u[n, k] - 8) * s[g, n] + z[g, n]),   g = k / G
//           = sum_g s * A_g + (z - 136 s) * X_g,   A_g = sum_k (128 + u) x,   X_g = sum_k x   (both fp32 on the mma)
//
// X_g comes from a second mma with A = ones. Within each 64-k chunk the k order is permuted (the same for A and
// B): lane (g, c) holds x[16c .. 16c + 15] of the chunk, two 16-byte loads, as its B fragments of the four k16 steps.
// One block: 16 output rows, W warps; warps take the K groups round robin, CH chunks in flight per warp (the launch
// config: more warps where N / 16 blocks alone leave the memory system idle); the warps' sums meet in shared memory
// and the block writes y in x's dtype.
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace {

__device__ __forceinline__ uint32_t lop3_or_and(uint32_t a, uint32_t mask, uint32_t bias) {
  uint32_t r;  // (a & mask) | bias
  asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(r) : "r"(a), "r"(mask), "r"(bias));
  return r;
}

template <bool BF16>
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (BF16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
}

template <typename T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ __nv_bfloat16 from_f(float v) { return __float2bfloat16(v); }
template <> __device__ __forceinline__ __half from_f(float v) { return __float2half(v); }

// T: bf16 or fp16 (x, scales/zeros, y). CPG: 64-k chunks per group (G / 64); WARPS per block; CHUNKS: 64-k chunks
// each warp loads before it computes.
template <typename T, int CPG, int WARPS, int CHUNKS>
__global__ void __launch_bounds__(WARPS * 32) int4_mma_gemv_kernel(
    const T* __restrict__ x, const uint4* __restrict__ qw, const T* __restrict__ sz, T* __restrict__ y,
    int M, int K, int N) {
  constexpr bool BF16 = std::is_same<T, __nv_bfloat16>::value;
  constexpr int GPI = CHUNKS / CPG;        // groups per iteration
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, c = lane % 4;
  const int tile = blockIdx.x;
  const int qchunks = K / 64, ngroups = qchunks / CPG;
  const int mx = min(g, M - 1);            // B column g is batch row g (clamped: extra columns are ignored)
  const T* xrow = x + (size_t)mx * K + 16 * c;
  const uint4* wtile = qw + (size_t)tile * qchunks * 32 + lane;
  const int r0 = tile * 16 + g, r1 = r0 + 8;
  float o[4] = {0.f, 0.f, 0.f, 0.f};       // (r0, 2c), (r0, 2c+1), (r1, 2c), (r1, 2c+1)
  const uint32_t ones = BF16 ? 0x3F803F80u : 0x3C003C00u;
  const uint32_t one_a[4] = {ones, ones, ones, ones};

  for (int base = warp; base < ngroups; base += WARPS * GPI) {
    uint4 wq[CHUNKS], xq[CHUNKS][2];
    uint32_t s0[GPI], s1[GPI];
#pragma unroll
    for (int i = 0; i < GPI; ++i) {
      const int grp = base + i * WARPS;
      const bool ok = grp < ngroups;
#pragma unroll
      for (int j = 0; j < CPG; ++j) {
        const int q = grp * CPG + j;
        if (ok) {
          wq[i * CPG + j] = ld_stream(wtile + (size_t)q * 32);
          const uint4* xp = reinterpret_cast<const uint4*>(xrow + (size_t)q * 64);
          xq[i * CPG + j][0] = __ldg(xp);
          xq[i * CPG + j][1] = __ldg(xp + 1);
        } else {
          wq[i * CPG + j] = make_uint4(0, 0, 0, 0);
          xq[i * CPG + j][0] = xq[i * CPG + j][1] = make_uint4(0, 0, 0, 0);
        }
      }
      const uint32_t* szw = reinterpret_cast<const uint32_t*>(sz);   // [G, N] pairs (scale, zero)
      s0[i] = ok ? __ldg(szw + (size_t)grp * N + r0) : 0u;
      s1[i] = ok ? __ldg(szw + (size_t)grp * N + r1) : 0u;
    }
#pragma unroll
    for (int i = 0; i < GPI; ++i) {
      float acc[4] = {0.f, 0.f, 0.f, 0.f}, xs[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int j = 0; j < CPG; ++j) {
        const uint4 w = wq[i * CPG + j];
        const uint32_t wv[4] = {w.x, w.y, w.z, w.w};
        const uint32_t xv[8] = {xq[i * CPG + j][0].x, xq[i * CPG + j][0].y, xq[i * CPG + j][0].z,
                                xq[i * CPG + j][0].w, xq[i * CPG + j][1].x, xq[i * CPG + j][1].y,
                                xq[i * CPG + j][1].z, xq[i * CPG + j][1].w};
#pragma unroll
        for (int s = 0; s < 4; ++s) {       // k16 step s: word s of the lane's load, x pairs 2s and 2s + 1
          uint32_t a[4];
#pragma unroll
          for (int p = 0; p < 4; ++p) {
            if constexpr (BF16) {   // bf16 128.0 = 0x4300, ulp 1: the nibble in mantissa bits 0..3
              a[p] = lop3_or_and(wv[s] >> (4 * p), 0x000F000Fu, 0x43004300u);
            } else {                // fp16 128.0 = 0x5800, ulp 1/8: the nibble in mantissa bits 3..6
              a[p] = lop3_or_and((wv[s] >> (4 * p)) << 3, 0x00780078u, 0x58005800u);
            }
          }
          mma<BF16>(acc, a, xv[2 * s], xv[2 * s + 1]);
          mma<BF16>(xs, one_a, xv[2 * s], xv[2 * s + 1]);
        }
      }
      const T* sp0 = reinterpret_cast<const T*>(&s0[i]);
      const T* sp1 = reinterpret_cast<const T*>(&s1[i]);
      const float sc0 = to_f(sp0[0]), zc0 = to_f(sp0[1]) - 136.f * to_f(sp0[0]);
      const float sc1 = to_f(sp1[0]), zc1 = to_f(sp1[1]) - 136.f * to_f(sp1[0]);
      o[0] += sc0 * acc[0] + zc0 * xs[0];
      o[1] += sc0 * acc[1] + zc0 * xs[1];
      o[2] += sc1 * acc[2] + zc1 * xs[2];
      o[3] += sc1 * acc[3] + zc1 * xs[3];
    }
  }
  __shared__ float red[WARPS][16][8];      // [warp][row in tile][batch]
  red[warp][g][2 * c] = o[0];
  red[warp][g][2 * c + 1] = o[1];
  red[warp][g + 8][2 * c] = o[2];
  red[warp][g + 8][2 * c + 1] = o[3];
  __syncthreads();
  const int t = threadIdx.x;               // the first 128 threads: (row, batch) = (t / 8, t % 8)
  const int row = t / 8, b = t % 8;
  if (t < 128 && b < M) {
    float v = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) v += red[w][row][b];
    y[(size_t)b * N + tile * 16 + row] = from_f<T>(v);
  }
}

// Launch configs (warps, chunks in flight per warp), chosen per shape by the caller (gemv.mma_config).
constexpr int CONFIGS[][2] = {{4, 4}, {8, 4}, {4, 8}, {8, 8}, {16, 4}, {16, 2}};
constexpr int NCONFIGS = sizeof(CONFIGS) / sizeof(CONFIGS[0]);

template <typename T, int CPG, int C>
void launch_config(const T* x, const uint4* w, const T* sz, T* y, int M, int K, int N, cudaStream_t stream) {
  constexpr int W = CONFIGS[C][0], CH = CONFIGS[C][1] < CPG ? CPG : CONFIGS[C][1];
  int4_mma_gemv_kernel<T, CPG, W, CH><<<N / 16, W * 32, 0, stream>>>(x, w, sz, y, M, K, N);
}

template <typename T, int CPG>
void launch_group(const T* x, const uint4* w, const T* sz, T* y, int M, int K, int N, int config, cudaStream_t st) {
  switch (config) {
    case 0: launch_config<T, CPG, 0>(x, w, sz, y, M, K, N, st); break;
    case 1: launch_config<T, CPG, 1>(x, w, sz, y, M, K, N, st); break;
    case 2: launch_config<T, CPG, 2>(x, w, sz, y, M, K, N, st); break;
    case 3: launch_config<T, CPG, 3>(x, w, sz, y, M, K, N, st); break;
    case 4: launch_config<T, CPG, 4>(x, w, sz, y, M, K, N, st); break;
    default: launch_config<T, CPG, 5>(x, w, sz, y, M, K, N, st); break;
  }
}

template <typename T>
void launch(const torch::Tensor& x, const torch::Tensor& qw, const torch::Tensor& sz, torch::Tensor& y, int group,
            int config) {
  const int M = x.size(0), K = x.size(1), N = y.size(1);
  auto stream = at::cuda::getCurrentCUDAStream();
  auto xp = reinterpret_cast<const T*>(x.data_ptr());
  auto wp = reinterpret_cast<const uint4*>(qw.data_ptr());
  auto sp = reinterpret_cast<const T*>(sz.data_ptr());
  auto yp = reinterpret_cast<T*>(y.data_ptr());
  switch (group) {
    case 64: launch_group<T, 1>(xp, wp, sp, yp, M, K, N, config, stream); break;
    case 128: launch_group<T, 2>(xp, wp, sp, yp, M, K, N, config, stream); break;
    case 256: launch_group<T, 4>(xp, wp, sp, yp, M, K, N, config, stream); break;
    default: TORCH_CHECK(false, "int4_mma_gemv: group size ", group, " is not 64, 128 or 256");
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

// x [M <= 8, K] bf16/fp16 contiguous; qw int32 [N, K / 8] in pack_int4_mma's order; sz [K / G, N, 2] in x's dtype.
// config: an index into CONFIGS.
torch::Tensor int4_mma_gemv(torch::Tensor x, torch::Tensor qw, torch::Tensor sz, int64_t group, int64_t config) {
  TORCH_CHECK(x.is_cuda() && qw.is_cuda() && sz.is_cuda(), "int4_mma_gemv: CUDA tensors only");
  TORCH_CHECK(x.dim() == 2 && x.size(0) <= 8 && x.is_contiguous(), "int4_mma_gemv: x must be contiguous [M <= 8, K]");
  TORCH_CHECK(qw.scalar_type() == torch::kInt32 && qw.is_contiguous(), "int4_mma_gemv: qw must be int32 contiguous");
  TORCH_CHECK(sz.scalar_type() == x.scalar_type() && sz.is_contiguous(), "int4_mma_gemv: scales_zeros in x's dtype");
  const int64_t K = x.size(1), N = qw.size(0);
  TORCH_CHECK(qw.size(1) * 8 == K && N % 16 == 0 && K % group == 0, "int4_mma_gemv: shapes do not match");
  TORCH_CHECK(sz.size(0) == K / group && sz.size(1) == N && sz.size(2) == 2, "int4_mma_gemv: scales_zeros shape");
  TORCH_CHECK(reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0, "int4_mma_gemv: x must be 16-byte aligned");
  TORCH_CHECK(config >= 0 && config < NCONFIGS, "int4_mma_gemv: config ", config, " not in [0, ", NCONFIGS, ")");
  auto y = torch::empty({x.size(0), N}, x.options());
  if (x.scalar_type() == torch::kBFloat16) launch<__nv_bfloat16>(x, qw, sz, y, group, config);
  else if (x.scalar_type() == torch::kHalf) launch<__half>(x, qw, sz, y, group, config);
  else TORCH_CHECK(false, "int4_mma_gemv: x must be bf16 or fp16");
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("int4_mma_gemv", &int4_mma_gemv, "int4 weight-only GEMV on tensor cores (x [M <= 8, K])");
  m.def("configs", []() { return NCONFIGS; });
}
