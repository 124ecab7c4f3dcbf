// The rows tile (conv2d_rows.h), written once and compiled per ISA: each ISA's translation
// unit includes this file, and the unnamed namespace gives every one its own copy.
#pragma once

#include <cstdint>
#include <cstring>

#include "cpu/conv2d_rows.h"
#include "cpu/vector_width.h"

namespace fastcnn::cpu {
namespace {

// 16 floats as one value: GCC/Clang lower it to the widest vectors the flags allow.
typedef float Vec16 __attribute__((vector_size(16 * sizeof(float))));
static_assert(kRowsNR == 32, "a tile row is two Vec16");

inline Vec16 load16(const float* p) {
  Vec16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Through bias and ReLU into memory, element by element: a tile in a buffer.
inline void store_elements(const float (&out)[kRowsMR][kRowsNR], const RowsStore& st) {
  for (int j = 0; j < st.cols; ++j)
    for (int i = 0; i < st.rows; ++i) {
      float v = out[i][j] + (st.bias ? st.bias[j] : 0.f);
      if (st.relu) v = v < 0.f ? 0.f : v;
      st.y[j * st.filter_stride + i * st.position_stride] = v;
    }
}

// The tile through bias and ReLU into memory: whole rows of filters as vectors when filters
// are adjacent (NHWC output), element by element otherwise.
__attribute__((always_inline)) inline void store(const Vec16 (&acc)[kRowsMR][2],
                                                 const RowsStore& st) {
  if (st.filter_stride == 1 && st.cols == kRowsNR) {
    const Vec16 zero = {};
    const Vec16 b0 = st.bias ? load16(st.bias) : zero, b1 = st.bias ? load16(st.bias + 16) : zero;
#pragma GCC unroll 8
    for (int i = 0; i < kRowsMR; ++i) {  // a fixed count, so acc stays in registers
      if (i == st.rows) break;
      Vec16 v[2] = {acc[i][0] + b0, acc[i][1] + b1};
      if (st.relu)  // v < 0 is false for NaN: NaN stays NaN, as torch.relu
        for (Vec16& h : v) h = h < zero ? zero : h;
      std::memcpy(st.y + i * st.position_stride, v, sizeof v);
    }
    return;
  }
  alignas(64) float out[kRowsMR][kRowsNR];
#pragma GCC unroll 8
  for (int i = 0; i < kRowsMR; ++i)
    for (int h = 0; h < 2; ++h) std::memcpy(out[i] + 16 * h, &acc[i][h], sizeof(Vec16));
  store_elements(out, st);
}

// acc[i][v] += the tile's rows times filters [0, Vecs * lanes) of w's rows (kRowsNR apart).
template <typename V, int Vecs>
__attribute__((always_inline)) inline void accumulate(int64_t segs, const float* const* rows,
                                                      int64_t len, int64_t step, const float* w,
                                                      V (&acc)[kRowsMR][Vecs]) {
  constexpr int kLanes = sizeof(V) / sizeof(float);
  for (int64_t s = 0; s < segs; ++s) {
    const float* row = rows[s];
    for (int64_t t = 0; t < len; ++t, w += kRowsNR) {
      V b[Vecs];
#pragma GCC unroll 2
      for (int v = 0; v < Vecs; ++v) std::memcpy(&b[v], w + v * kLanes, sizeof(V));
#pragma GCC unroll 8
      for (int i = 0; i < kRowsMR; ++i) {
        const float a = row[i * step + t];
#pragma GCC unroll 2
        for (int v = 0; v < Vecs; ++v) acc[i][v] += a * b[v];
      }
    }
  }
}

// With 64-byte vectors the whole tile's 16 accumulators fit the registers (AVX-512: 32 zmm).
// Narrower ISAs run it in passes of one vector of filters (AVX2: 8 of 16 ymm), since the whole
// tile took 32 ymm there and ran from the stack (the stem at 7 GFLOP/s).
void rows_tile(int64_t segs, const float* const* rows, int64_t len, int64_t step, const float* w,
               const RowsStore& st) {
  if constexpr (kVectorBytes == 64) {
    Vec16 acc[kRowsMR][2] = {};
    accumulate(segs, rows, len, step, w, acc);
    store(acc, st);
  } else {
    typedef float Vec __attribute__((vector_size(kVectorBytes)));
    constexpr int kLanes = kVectorBytes / sizeof(float);
    alignas(64) float out[kRowsMR][kRowsNR];
    for (int j0 = 0; j0 < kRowsNR; j0 += kLanes) {
      Vec acc[kRowsMR][1] = {};
      accumulate(segs, rows, len, step, w + j0, acc);
#pragma GCC unroll 8
      for (int i = 0; i < kRowsMR; ++i) {
        const Vec v = acc[i][0];
        std::memcpy(out[i] + j0, &v, sizeof v);
      }
    }
    store_elements(out, st);
  }
}

RowsKernel make_rows_kernel() {
  return {&rows_tile};
}

}  // namespace
}  // namespace fastcnn::cpu
