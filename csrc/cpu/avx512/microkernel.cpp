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

// Adds the product of the panels to acc, which holds the tile's starting values. NV: B vectors
// per reduction step. Tiles of at most 16 columns (a panel's tail) take one, so they cost half a
// full tile, not all of it.
template <int NV = 2>
inline void tile_8x32(int64_t kc, const float* a, const float* b, __m512 (&acc)[kMR][2]) {
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
#pragma GCC unroll 8
  for (int i = 0; i < kMR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  tile_8x32(kc, a, b, acc);
#pragma GCC unroll 8
  for (int i = 0; i < kMR; ++i) {
    _mm512_storeu_ps(c + i * kNR, acc[i][0]);
    _mm512_storeu_ps(c + i * kNR + 16, acc[i][1]);
  }
}

template <bool Accumulate, bool Relu>
inline __m512 finish(__m512 v, const float* c, __mmask16 m) {
  if constexpr (Accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, c), v);
  // max returns its second operand when either is NaN (or both are zeros), so NaN and -0
  // pass through as torch.relu lets them; one instruction where compare-and-blend took two.
  // (The all-lanes mask form: GCC 12 warns on the unmasked intrinsic's undefined source.)
  if constexpr (Relu) v = _mm512_maskz_max_ps(0xFFFF, _mm512_setzero_ps(), v);
  return v;
}

// The epilogue's choices are template arguments and its pointers locals: the masked stores
// may alias anything, so fields read from the Epilogue inside the row loop were reloaded and
// branched on after every store. The accumulators start from the bias instead of adding it at
// the end. With a 9-long reduction (one input channel, 3x3) the epilogue took a quarter of the
// kernel's time.
template <bool Accumulate, bool Relu>
void store_8x32(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int rows,
                int cols, const float* bias, const float* col_bias) {
  // Ask for the destination lines while the FMAs run: output tiles are usually cold.
  for (int i = 0; i < rows; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_ET0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16), _MM_HINT_ET0);
  }
  const __mmask16 m0 = cols >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32  ? 0xFFFF
                       : cols > 16 ? static_cast<__mmask16>((1u << (cols - 16)) - 1)
                                   : 0;
  const __m512 col0 = col_bias ? _mm512_maskz_loadu_ps(m0, col_bias) : _mm512_setzero_ps();
  const __m512 col1 = col_bias ? _mm512_maskz_loadu_ps(m1, col_bias + 16) : _mm512_setzero_ps();
  __m512 acc[kMR][2];
#pragma GCC unroll 8
  for (int i = 0; i < kMR; ++i) {
    const __m512 row = bias && i < rows ? _mm512_set1_ps(bias[i]) : _mm512_setzero_ps();
    acc[i][0] = col_bias ? _mm512_add_ps(row, col0) : row;
    acc[i][1] = col_bias ? _mm512_add_ps(row, col1) : row;
  }
  if (cols > 16)
    tile_8x32<2>(kc, a, b, acc);
  else
    tile_8x32<1>(kc, a, b, acc);
#pragma GCC unroll 8
  for (int i = 0; i < kMR; ++i) {
    if (i >= rows) break;
    float* ci = c + i * ldc;
    _mm512_mask_storeu_ps(ci, m0, finish<Accumulate, Relu>(acc[i][0], ci, m0));
    _mm512_mask_storeu_ps(ci + 16, m1, finish<Accumulate, Relu>(acc[i][1], ci + 16, m1));
  }
}

void run_store_8x32(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int rows,
                    int cols, const Epilogue<float>& ep) {
  const auto store = ep.accumulate
                         ? (ep.relu ? &store_8x32<true, true> : &store_8x32<true, false>)
                         : (ep.relu ? &store_8x32<false, true> : &store_8x32<false, false>);
  store(kc, a, b, c, ldc, rows, cols, ep.bias, ep.col_bias);
}

}  // namespace

MicroKernels microkernels_avx512() {
  return {"avx512", {kMR, kNR, &run_8x32, &run_store_8x32}, make_microkernel<double, 8, 16>()};
}

}  // namespace fastcnn::cpu
