// An 8x8 float transpose, compiled per ISA like the headers that include it: the unnamed
// namespace gives every translation unit its own copy, built with its own flags.
#pragma once

#include <algorithm>
#include <cstdint>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace fastcnn::cpu {
namespace {

// src: 8 rows of 8 floats (row stride src_stride) -> dst: its transpose (row stride
// dst_stride).
inline void transpose_8x8(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
#if defined(__AVX2__)
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * src_stride);
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
#else
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 8; ++j) dst[j * dst_stride + i] = src[i * src_stride + j];
#endif
}

// dst[j * dst_col_stride + i * dst_row_stride] = src[i * src_stride + j] for i < rows,
// j < cols: whole 8x8 blocks by transposes where dst's rows are unit-stride, the rest element
// by element. Stores staged rows of channels (or filters) into NCHW rows.
inline void transpose_into(const float* src, int64_t src_stride, int rows, int cols, float* dst,
                           int64_t dst_col_stride, int64_t dst_row_stride) {
  for (int i0 = 0; i0 < rows; i0 += 8)
    for (int j0 = 0; j0 < cols; j0 += 8) {
      const float* s = src + i0 * src_stride + j0;
      float* d = dst + j0 * dst_col_stride + i0 * dst_row_stride;
      const int ni = std::min(8, rows - i0), nj = std::min(8, cols - j0);
      if (dst_row_stride == 1 && ni == 8 && nj == 8) {
        transpose_8x8(s, src_stride, d, dst_col_stride);
        continue;
      }
      for (int j = 0; j < nj; ++j)
        for (int i = 0; i < ni; ++i)
          d[j * dst_col_stride + i * dst_row_stride] = s[i * src_stride + j];
    }
}

}  // namespace
}  // namespace fastcnn::cpu
