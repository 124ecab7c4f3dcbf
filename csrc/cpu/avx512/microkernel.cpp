// AVX-512: 32 zmm registers. float32 runs an intrinsics 8 x 32 kernel (16 accumulators, two
// B vectors, A broadcast from memory; with 4-cycle FMA latency, one 512-bit FMA a cycle (Zen 4)
// needs 4 independent chains and two (Xeons with two FMA ports) 8, so 16 keep either busy)
// whose epilogue works on the accumulators in registers with masked loads and stores for edge
// tiles. float64 uses the generic body.
#include <immintrin.h>

#include "cpu/microkernel_impl.h"

namespace fastcnn::cpu {
namespace {

constexpr int kMR = 8, kNR = 32;

// NV: B vectors per reduction step. Tiles of at most 16 columns (a panel's tail) take one,
// so they cost half a full tile, not all of it.
template <int NV = 2>
inline void tile_8x32(int64_t kc, const float* a, const float* b, __m512 (&acc)[kMR][2]) {
#pragma GCC unroll 8
  for (int i = 0; i < kMR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  auto step = [&](const float* ak, const float* bk) {
    const __m512 b0 = _mm512_loadu_ps(bk);
    const __m512 b1 = NV == 2 ? _mm512_loadu_ps(bk + 16) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < kMR; ++i) {
      const __m512 ai = _mm512_set1_ps(ak[i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      if constexpr (NV == 2) acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  };
  int64_t k = 0;
  for (; k + 4 <= kc; k += 4, a += 4 * kMR, b += 4 * kNR) {
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u) step(a + u * kMR, b + u * kNR);
  }
  for (; k < kc; ++k, a += kMR, b += kNR) step(a, b);
}

void run_8x32(int64_t kc, const float* a, const float* b, float* c) {
  __m512 acc[kMR][2];
  tile_8x32(kc, a, b, acc);
#pragma GCC unroll 8
  for (int i = 0; i < kMR; ++i) {
    _mm512_storeu_ps(c + i * kNR, acc[i][0]);
    _mm512_storeu_ps(c + i * kNR + 16, acc[i][1]);
  }
}

inline __m512 finish(__m512 v, float* c, __mmask16 m, const Epilogue<float>& ep, __m512 bias) {
  if (ep.accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, c), v);
  v = _mm512_add_ps(v, bias);  // row bias plus column bias
  // max returns its second operand when either is NaN (or both are zeros), so NaN and -0
  // pass through as torch.relu lets them; one instruction where compare-and-blend took two.
  if (ep.relu) v = _mm512_max_ps(_mm512_setzero_ps(), v);
  return v;
}

void run_store_8x32(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int rows,
                    int cols, const Epilogue<float>& ep) {
  // Ask for the destination lines while the FMAs run: output tiles are usually cold.
  for (int i = 0; i < rows; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_ET0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16), _MM_HINT_ET0);
  }
  __m512 acc[kMR][2];
  if (cols > 16)
    tile_8x32<2>(kc, a, b, acc);
  else
    tile_8x32<1>(kc, a, b, acc);
  const __mmask16 m0 = cols >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32  ? 0xFFFF
                       : cols > 16 ? static_cast<__mmask16>((1u << (cols - 16)) - 1)
                                   : 0;
  const __m512 col_bias0 =
      ep.col_bias ? _mm512_maskz_loadu_ps(m0, ep.col_bias) : _mm512_setzero_ps();
  const __m512 col_bias1 =
      ep.col_bias ? _mm512_maskz_loadu_ps(m1, ep.col_bias + 16) : _mm512_setzero_ps();
#pragma GCC unroll 8
  for (int i = 0; i < kMR; ++i) {
    if (i >= rows) break;
    float* ci = c + i * ldc;
    const __m512 bias = ep.bias ? _mm512_set1_ps(ep.bias[i]) : _mm512_setzero_ps();
    _mm512_mask_storeu_ps(ci, m0, finish(acc[i][0], ci, m0, ep, _mm512_add_ps(bias, col_bias0)));
    _mm512_mask_storeu_ps(ci + 16, m1,
                          finish(acc[i][1], ci + 16, m1, ep, _mm512_add_ps(bias, col_bias1)));
  }
}

}  // namespace

MicroKernels microkernels_avx512() {
  return {"avx512", {kMR, kNR, &run_8x32, &run_store_8x32}, make_microkernel<double, 8, 16>()};
}

}  // namespace fastcnn::cpu
