// The stem's F(5, 4) transforms (conv2d_stem_winograd.h), written once and compiled per ISA
// beside the rows tile they feed: each ISA's translation unit includes this file, and the
// unnamed namespace gives every one its own copy.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cpu/conv2d_rows_impl.h"
#include "cpu/conv2d_stem_winograd.h"
#include "cpu/transpose_8x8.h"

namespace fastcnn::cpu {
namespace {

// Column q = 2 j + a of the input transform over one tile's lanes (xi, a'): BT[xi][j] where
// a' == a, so one tile's 16 padded-row values map to its 16 transformed values.
struct StemInputColumns {
  float c[kStemLanes][kStemLanes];
};
constexpr StemInputColumns stem_input_columns() {
  StemInputColumns t{};
  for (int j = 0; j < kStemPoints; ++j)
    for (int a = 0; a < 2; ++a)
      for (int xi = 0; xi < kStemPoints; ++xi) t.c[2 * j + a][2 * xi + a] = kStemBT[xi][j];
  return t;
}

void stem_input(const float* xpad, int64_t tiles, float* v) {
  static constexpr StemInputColumns kColumns = stem_input_columns();
  Vec16 col[kStemLanes];
  for (int q = 0; q < kStemLanes; ++q) col[q] = load16(kColumns.c[q]);
  for (int64_t t = 0; t < tiles; ++t, xpad += 2 * kStemOut, v += kStemLanes) {
    Vec16 acc = {};
    for (int q = 0; q < kStemLanes; ++q) acc += xpad[q] * col[q];
    std::memcpy(v, &acc, sizeof acc);
  }
}

// r = A^T m, eight products in, five outputs; A^T's rows are the powers 0 to 4 of the points
// 0, 1, -1, 2, -2, 1/2, -1/2, with infinity's column adding m[7] to the last.
inline void stem_output_1d(const Vec16* m, Vec16* r) {
  const Vec16 s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
  const Vec16 s56 = m[5] + m[6], d56 = m[5] - m[6];
  r[0] = m[0] + s12 + s34 + s56;
  r[1] = d12 + 2.f * d34 + 0.5f * d56;
  r[2] = s12 + 4.f * s34 + 0.25f * s56;
  r[3] = d12 + 8.f * d34 + 0.125f * d56;
  r[4] = s12 + 16.f * s34 + 0.0625f * s56 + m[7];
}

// Outputs as vectors of filters when filters are adjacent (NHWC output); otherwise staged as
// [position][filter], transposed in 8x8 blocks and stored a filter's row at a time.
void stem_output(const float* m, const StemStore& store) {
  constexpr int kPositions = kRowsMR * kStemOut;
  const StemStore st = store;  // a copy the output stores cannot alias, kept in registers
  const bool adjacent = st.filter_stride == 1 && st.cols == kRowsNR;
  alignas(64) float staged[kPositions][kRowsNR];
  for (int h = 0; h < kRowsNR; h += 16) {
    const Vec16 b = load16(st.bias + h);
    for (int i = 0; i < kRowsMR; ++i) {
      Vec16 mm[kStemPoints], o[kStemOut];
      for (int xi = 0; xi < kStemPoints; ++xi)
        mm[xi] = load16(m + (xi * kRowsMR + i) * kRowsNR + h);
      stem_output_1d(mm, o);
      for (int k = 0; k < kStemOut; ++k) {
        const int p = i * kStemOut + k;
        Vec16 out = o[k] + b;
        if (st.relu) out = relu_lanes(out);
        if (!adjacent)
          std::memcpy(staged[p] + h, &out, sizeof out);
        else if (p < st.positions)
          std::memcpy(st.y + p * st.position_stride + h, &out, sizeof out);
      }
    }
  }
  if (!adjacent)
    transpose_into(staged[0], kRowsNR, st.positions, st.cols, st.y, st.filter_stride,
                   st.position_stride);
}

StemTransforms make_stem_transforms() {
  return {&stem_input, &stem_output};
}

}  // namespace
}  // namespace fastcnn::cpu
