// Forward convolution of stride-2 stems (at most 4 channels, 5 to 8 columns per window) as a
// 1-D Winograd F(5, 4) along each output row, multiplied by the rows tile (conv2d_rows.h).
//
// A stride-2 correlation over one input row is two stride-1 correlations of at most 4 taps,
// one per column parity a (phase): y[o] = sum_a sum_u x[2 (o + u) + a - pw] w[2 u + a].
// F(5, 4) computes 5 outputs of each from 8 transformed inputs: 8 products per 5 outputs and
// phase instead of 20. For the 7x7 ResNet stem that is 16 products per 5 outputs and input
// row against 35 direct, 2.2x fewer. Tiles of 5 outputs take the rows tile's positions,
// (channel, kernel row) pairs its segments and the two phases its run:
//   M[xi][tile][k] = sum_{c, r} sum_a V[c, ih(r)][tile][xi][a] * U[xi][c, r][a][k]
//   y[5 tile + o][k] = sum_xi AT[o][xi] M[xi][tile][k]  (+ bias, ReLU)
// V holds each tile's 16 transformed inputs (xi, a) side by side; the rows tile broadcasts
// them as it does pixels, from a step of 16 floats per tile.
//
// The transforms are Toom-Cook's for the points 0, +-1, +-2, +-1/2 and infinity: against a
// float64 convolution the result stays within a few 1e-6 relative (tests/test_conv2d_stem.py).
#pragma once

#include <cstdint>

#include "cpu/conv2d_geom.h"
#include "cpu/conv2d_rows.h"

namespace fastcnn::cpu {

constexpr int kStemOut = 5;                  // outputs per tile
constexpr int kStemTaps = 4;                 // taps per phase
constexpr int kStemPoints = 8;               // transformed values per tile and phase
constexpr int kStemLanes = 2 * kStemPoints;  // (xi, phase) pairs of one tile
// B^T: V[xi] = sum_j BT[xi][j] d[j] over a tile's 8 inputs of one phase.
constexpr float kStemBT[kStemPoints][kStemPoints] = {
    {-1, 0, 21.f / 4, 0, -21.f / 4, 0, 1, 0},  {0, 1, 1, -17.f / 4, -17.f / 4, 1, 1, 0},
    {0, -1, 1, 17.f / 4, -17.f / 4, -1, 1, 0}, {0, 0.5f, 0.25f, -2.5f, -1.25f, 2, 1, 0},
    {0, -0.5f, 0.25f, 2.5f, -1.25f, -2, 1, 0}, {0, 2, 4, -2.5f, -5, 0.5f, 1, 0},
    {0, -2, 4, 2.5f, -5, -0.5f, 1, 0},         {0, -1, 0, 21.f / 4, 0, -21.f / 4, 0, 1},
};
// G: U[xi] = sum_u G[xi][u] g[u] over one phase's 4 taps.
constexpr float kStemG[kStemPoints][kStemTaps] = {
    {-1, 0, 0, 0},
    {-2.f / 9, -2.f / 9, -2.f / 9, -2.f / 9},
    {-2.f / 9, 2.f / 9, -2.f / 9, 2.f / 9},
    {1.f / 90, 1.f / 45, 2.f / 45, 4.f / 45},
    {1.f / 90, -1.f / 45, 2.f / 45, -4.f / 45},
    {32.f / 45, 16.f / 45, 8.f / 45, 4.f / 45},
    {32.f / 45, -16.f / 45, 8.f / 45, -4.f / 45},
    {0, 0, 0, 1},
};

// Where the products of one group of kRowsMR tiles (5 kRowsMR outputs of one row, kRowsNR
// filters) go: output o of the group, filter j at y[j * filter_stride + o * position_stride]
// for o < positions and j < cols.
struct StemStore {
  float* y;
  int64_t filter_stride, position_stride;
  int positions, cols;
  const float* bias;  // kRowsNR floats, zero past the last filter
  bool relu;
};

// The transforms, written once (conv2d_stem_winograd_impl.h) and compiled per ISA.
struct StemTransforms {
  // v[t][xi][a] for t < tiles from a zero-padded input row: tile t reads xpad[10 t + 2 j + a].
  void (*input)(const float* xpad, int64_t tiles, float* v);
  // One group's outputs from its products m[xi][tile][kRowsNR].
  void (*output)(const float* m, const StemStore& st);
};

StemTransforms stem_transforms_generic();
#if defined(FASTCNN_X86)
StemTransforms stem_transforms_avx2();
StemTransforms stem_transforms_avx512();
#endif

// True when this forward convolution takes the stem path: the rows path applies, the stride
// across is 2 with 5 to 8 columns, and the algorithm is not forced direct.
bool stem_winograd_applies(const ConvGeom& g, bool float32);
int64_t stem_winograd_workspace_elems(const ConvGeom& g, int threads);
void stem_winograd_forward(const ConvGeom& g, const float* x, const float* w, const float* bias,
                           float* y, bool relu, float* ws, int threads);

}  // namespace fastcnn::cpu
