// An 8x8 float transpose, compiled per ISA like the headers that include it: the unnamed
// namespace gives every translation unit its own copy, built with its own flags.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#if defined(__AVX2__)
#include <immintrin.h>
#elif defined(__SSE2__)
#include <xmmintrin.h>
#endif

namespace fastcnn::cpu {
namespace {

// row(i) -> the 8 floats of row i; dst: their transpose (row stride dst_stride).
template <typename Row>
inline void transpose_8x8_rows(const Row& row, float* dst, int64_t dst_stride) {
#if defined(__AVX2__)
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(row(i));
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * dst_stride, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * dst_stride, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
#elif defined(__SSE2__)  // every x86-64 CPU: four 4x4 transposes
  for (int i0 = 0; i0 < 8; i0 += 4)
    for (int j0 = 0; j0 < 8; j0 += 4) {
      __m128 r0 = _mm_loadu_ps(row(i0) + j0), r1 = _mm_loadu_ps(row(i0 + 1) + j0);
      __m128 r2 = _mm_loadu_ps(row(i0 + 2) + j0), r3 = _mm_loadu_ps(row(i0 + 3) + j0);
      _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
      float* d = dst + j0 * dst_stride + i0;
      _mm_storeu_ps(d, r0);
      _mm_storeu_ps(d + dst_stride, r1);
      _mm_storeu_ps(d + 2 * dst_stride, r2);
      _mm_storeu_ps(d + 3 * dst_stride, r3);
    }
#else
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 8; ++j) dst[j * dst_stride + i] = row(i)[j];
#endif
}

// src: 8 rows of 8 floats (row stride src_stride) -> dst: its transpose (row stride
// dst_stride).
inline void transpose_8x8(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
  transpose_8x8_rows([&](int i) { return src + i * src_stride; }, dst, dst_stride);
}

// dst[j * dst_col_stride + i * dst_row_stride] = src[i * src_stride + j] for i < rows,
// j < cols: whole 8x8 float blocks by transposes where dst's rows are unit-stride, the rest
// (and other element types) element by element. Stores staged rows of channels (or filters)
// into NCHW rows, NCHW planes into NHWC pixels (layout.cpp), and NCHW channel rows into the
// weight gradient's B panels (conv2d_packing.h).
template <typename T>
inline void transpose_into(const T* src, int64_t src_stride, int64_t rows, int64_t cols, T* dst,
                           int64_t dst_col_stride, int64_t dst_row_stride) {
  for (int64_t i0 = 0; i0 < rows; i0 += 8)
    for (int64_t j0 = 0; j0 < cols; j0 += 8) {
      const T* s = src + i0 * src_stride + j0;
      T* d = dst + j0 * dst_col_stride + i0 * dst_row_stride;
      const int ni = static_cast<int>(std::min<int64_t>(8, rows - i0));
      const int nj = static_cast<int>(std::min<int64_t>(8, cols - j0));
      if constexpr (std::is_same_v<T, float>) {
        if (dst_row_stride == 1 && ni == 8 && nj == 8) {
          transpose_8x8(s, src_stride, d, dst_col_stride);
          continue;
        }
      }
      for (int j = 0; j < nj; ++j)
        for (int i = 0; i < ni; ++i)
          d[j * dst_col_stride + i * dst_row_stride] = s[i * src_stride + j];
    }
}

}  // namespace
}  // namespace fastcnn::cpu
