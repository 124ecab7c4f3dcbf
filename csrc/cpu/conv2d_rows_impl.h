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

// Whole rows of filters are adjacent in memory (an NHWC output) and the tile has all of them.
inline bool rows_are_vectors(const RowsStore& st) {
  return st.filter_stride == 1 && st.cols == kRowsNR;
}

// Filters [j0, j0 + Vecs * lanes) of the tile's rows through bias and ReLU into memory, a
// vector at a time (rows_are_vectors).
template <typename V, int Vecs>
__attribute__((always_inline)) inline void store_rows(const V (&acc)[kRowsMR][Vecs], int j0,
                                                      const RowsStore& st) {
  constexpr int kLanes = sizeof(V) / sizeof(float);
  const V zero = {};
  V b[Vecs];
  for (int v = 0; v < Vecs; ++v) {
    b[v] = zero;
    if (st.bias) std::memcpy(&b[v], st.bias + j0 + v * kLanes, sizeof(V));
  }
#pragma GCC unroll 8
  for (int i = 0; i < kRowsMR; ++i) {  // a fixed count, so acc stays in registers
    if (i == st.rows) break;
    for (int v = 0; v < Vecs; ++v) {
      V out = acc[i][v] + b[v];
      if (st.relu) out = relu_lanes(out);
      std::memcpy(st.y + i * st.position_stride + j0 + v * kLanes, &out, sizeof out);
    }
  }
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

// The tile in passes of kPassVecs vectors of filters a row: with 64-byte vectors one pass of
// two (AVX-512: 16 of 32 zmm); narrower ISAs one vector a pass (AVX2: 8 of 16 ymm), since the
// whole tile took 32 ymm there and ran from the stack (the stem at 7 GFLOP/s). Rows of filters
// land as vectors when rows_are_vectors, pass by pass; other tiles go through `out`.
void rows_tile(int64_t segs, const float* const* rows, int64_t len, int64_t step, const float* w,
               const RowsStore& store) {
  typedef float Vec __attribute__((vector_size(kVectorBytes)));
  constexpr int kLanes = kVectorBytes / sizeof(float), kPassVecs = kVectorBytes == 64 ? 2 : 1;
  // A copy: the stores through st.y could alias the caller's fields, which the passes would
  // then read again after every store.
  const RowsStore st = store;
  alignas(64) float out[kRowsMR][kRowsNR];
  for (int j0 = 0; j0 < kRowsNR; j0 += kPassVecs * kLanes) {
    Vec acc[kRowsMR][kPassVecs] = {};
    accumulate(segs, rows, len, step, w + j0, acc);
    if (rows_are_vectors(st)) {
      store_rows(acc, j0, st);
      continue;
    }
#pragma GCC unroll 8
    for (int i = 0; i < kRowsMR; ++i)
      for (int v = 0; v < kPassVecs; ++v) {
        const Vec part = acc[i][v];
        std::memcpy(out[i] + j0 + v * kLanes, &part, sizeof part);
      }
  }
  if (!rows_are_vectors(st)) store_elements(out, st);
}

RowsKernel make_rows_kernel() {
  return {&rows_tile};
}

}  // namespace
}  // namespace fastcnn::cpu
