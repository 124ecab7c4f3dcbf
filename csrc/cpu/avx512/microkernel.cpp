// AVX-512: 32 zmm registers. float32 runs an intrinsics 8 x 32 kernel (16 accumulators, two
// B vectors, A broadcast from memory; with 4-cycle FMA latency, one 512-bit FMA a cycle (Zen 4)
// needs 4 independent chains and two (Xeons with two FMA ports) 8, so 16 keep either busy)
// whose epilogue works on the accumulators in registers with masked loads and stores for edge
// tiles. float64 uses the shared body (microkernel_impl.h) at this width.
#include <immintrin.h>

#include <type_traits>

#include "cpu/microkernel_impl.h"

namespace fastcnn::cpu {
namespace {

constexpr int kMR = 8, kNR = 32;
// Every lane: shuffles and max take their all-lanes masked forms because GCC 12 warns on the
// unmasked intrinsics' undefined source operand.
constexpr __mmask16 kAll = 0xFFFF;

// Adds the product of A (PackedA or RowsA) and the B panel to acc, which holds the tile's
// starting values. NV: B vectors per reduction step. Tiles of at most 16 columns (a panel's
// tail) take one, so they cost half a full tile, not all of it.
template <int NV, typename A>
inline void tile_8x32(int64_t kc, const A& a, const float* b, __m512 (&acc)[kMR][2]) {
  auto step = [&](int64_t k) {
    const float* bk = b + k * kNR;
    const __m512 b0 = _mm512_loadu_ps(bk);
    const __m512 b1 = NV == 2 ? _mm512_loadu_ps(bk + 16) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < kMR; ++i) {
      const __m512 ai = _mm512_set1_ps(a(k, i));
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      if constexpr (NV == 2) acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  };
  int64_t k = 0;
  for (; k + 4 <= kc; k += 4) {
    if constexpr (A::kRows) {
      // Rows read in place come from memory: each row's line four lines ahead, asked for
      // two rows every four steps (a line is 16 steps).
      const int i = static_cast<int>(k >> 2 & 3) * 2;
      _mm_prefetch(reinterpret_cast<const char*>(a.r[i] + k + 64), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(a.r[i + 1] + k + 64), _MM_HINT_T0);
    }
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u) step(k + u);
  }
  for (; k < kc; ++k) step(k);
}

void run_8x32(int64_t kc, const float* a, const float* b, float* c) {
  __m512 acc[kMR][2];
#pragma GCC unroll 8
  for (int i = 0; i < kMR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  tile_8x32<2>(kc, PackedA<float, kMR>{a}, b, acc);
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
  if constexpr (Relu) v = _mm512_maskz_max_ps(kAll, _mm512_setzero_ps(), v);
  return v;
}

// The 8 x 16 block H of the tile (columns 16H to 16H + 15) as its 16 columns of 8.
template <int H>
inline void transpose_8x16(const __m512 (&acc)[kMR][2], __m256 (&col)[16]) {
  __m512 t[kMR], u[kMR];
  for (int i = 0; i < kMR; i += 2) {
    t[i] = _mm512_maskz_unpacklo_ps(kAll, acc[i][H], acc[i + 1][H]);
    t[i + 1] = _mm512_maskz_unpackhi_ps(kAll, acc[i][H], acc[i + 1][H]);
  }
  // u[k] (rows 0-3) and u[4 + k] (rows 4-7): column 4 * L + k in 128-bit lane L.
  for (int half = 0; half < 2; ++half) {
    const __m512* th = t + 4 * half;
    u[4 * half + 0] = _mm512_maskz_shuffle_ps(kAll, th[0], th[2], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * half + 1] = _mm512_maskz_shuffle_ps(kAll, th[0], th[2], _MM_SHUFFLE(3, 2, 3, 2));
    u[4 * half + 2] = _mm512_maskz_shuffle_ps(kAll, th[1], th[3], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * half + 3] = _mm512_maskz_shuffle_ps(kAll, th[1], th[3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  // Lanes 0 and 1 of both halves, then lanes 2 and 3: columns k, 4 + k, 8 + k, 12 + k.
  const __m512i lanes01 = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const __m512i lanes23 = _mm512_add_epi32(lanes01, _mm512_set1_epi32(8));
  for (int k = 0; k < 4; ++k) {
    const __m512 c01 = _mm512_permutex2var_ps(u[k], lanes01, u[4 + k]);
    const __m512 c23 = _mm512_permutex2var_ps(u[k], lanes23, u[4 + k]);
    col[k] = _mm512_maskz_extractf32x8_ps(0xFF, c01, 0);
    col[4 + k] = _mm512_maskz_extractf32x8_ps(0xFF, c01, 1);
    col[8 + k] = _mm512_maskz_extractf32x8_ps(0xFF, c23, 0);
    col[12 + k] = _mm512_maskz_extractf32x8_ps(0xFF, c23, 1);
  }
}

// One column of a transposed tile (its rows under mask m) through the epilogue into c.
template <bool Accumulate, bool Relu>
inline void store_column(__m256 v, float* c, __mmask8 m) {
  if constexpr (Accumulate) v = _mm256_add_ps(_mm256_maskz_loadu_ps(m, c), v);
  if constexpr (Relu) v = _mm256_max_ps(_mm256_setzero_ps(), v);  // as in finish
  _mm256_mask_storeu_ps(c, m, v);
}

// The epilogue's choices are template arguments and its pointers locals: the masked stores
// may alias anything, so fields read from the Epilogue inside the row loop were reloaded and
// branched on after every store. The accumulators start from the bias instead of adding it at
// the end. With a 9-long reduction (one input channel, 3x3) the epilogue took a quarter of the
// kernel's time. Transposed tiles (an NHWC output: a column is a pixel, its rows 8 of its
// filters) are transposed in registers and stored a column of 8 at a time.
template <bool Accumulate, bool Relu, bool Transposed, typename A>
void store_8x32(int64_t kc, const A& a, const float* b, float* c, int64_t ldc, int rows, int cols,
                const float* bias, const float* col_bias) {
  // Ask for the destination lines while the FMAs run: output tiles are usually cold.
  // A transposed tile asks for the next column panel's lines instead: the tiles of the row
  // panels between take long enough for them to arrive (asking for its own lines, the
  // prefetches waited on each other: 10 % of the kernel's samples).
  if constexpr (Transposed) {
    for (int j = kNR; j < 2 * kNR; ++j)
      _mm_prefetch(reinterpret_cast<const char*>(c + j * ldc), _MM_HINT_ET0);
  } else {
    for (int i = 0; i < rows; ++i) {
      _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_ET0);
      _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16), _MM_HINT_ET0);
    }
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
  if constexpr (Transposed) {
    const auto m = static_cast<__mmask8>((1u << rows) - 1);
    auto store_block = [&](auto block) {
      constexpr int h = decltype(block)::value;
      __m256 col[16];
      transpose_8x16<h>(acc, col);
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j)
        if (16 * h + j < cols) store_column<Accumulate, Relu>(col[j], c + (16 * h + j) * ldc, m);
    };
    store_block(std::integral_constant<int, 0>{});
    if (cols > 16) store_block(std::integral_constant<int, 1>{});
    return;
  }
#pragma GCC unroll 8
  for (int i = 0; i < kMR; ++i) {
    if (i >= rows) break;
    float* ci = c + i * ldc;
    _mm512_mask_storeu_ps(ci, m0, finish<Accumulate, Relu>(acc[i][0], ci, m0));
    _mm512_mask_storeu_ps(ci + 16, m1, finish<Accumulate, Relu>(acc[i][1], ci + 16, m1));
  }
}

template <bool Transposed, typename A>
void run_store_8x32_as(int64_t kc, const A& a, const float* b, float* c, int64_t ldc, int rows,
                       int cols, const Epilogue<float>& ep) {
  const auto store = ep.accumulate ? (ep.relu ? &store_8x32<true, true, Transposed, A>
                                              : &store_8x32<true, false, Transposed, A>)
                                   : (ep.relu ? &store_8x32<false, true, Transposed, A>
                                              : &store_8x32<false, false, Transposed, A>);
  store(kc, a, b, c, ldc, rows, cols, ep.bias, ep.col_bias);
}

template <typename A>
void run_store_8x32_with(int64_t kc, const A& a, const float* b, float* c, int64_t ldc, int rows,
                         int cols, const Epilogue<float>& ep) {
  (ep.transposed ? &run_store_8x32_as<true, A> : &run_store_8x32_as<false, A>)(kc, a, b, c, ldc,
                                                                               rows, cols, ep);
}

void run_store_8x32(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int rows,
                    int cols, const Epilogue<float>& ep) {
  run_store_8x32_with(kc, PackedA<float, kMR>{a}, b, c, ldc, rows, cols, ep);
}

void run_store_rows_8x32(int64_t kc, const float* a, int64_t lda, const float* b, float* c,
                         int64_t ldc, int rows, int cols, const Epilogue<float>& ep) {
  run_store_8x32_with(kc, rows_at<float, kMR>(a, lda, rows), b, c, ldc, rows, cols, ep);
}

}  // namespace

MicroKernels microkernels_avx512() {
  return {"avx512",
          {kMR, kNR, &run_8x32, &run_store_8x32, &run_store_rows_8x32},
          make_microkernel<double, 8, 16>()};
}

}  // namespace fastcnn::cpu
