// Winograd F(4x4, 3x3) weight gradient for float32 3x3 stride-1 convolutions over
// channels-innermost dY and X: the adjoint of the forward's
//   Y = A^T [ sum_c (G g_kc G^T) .* (B^T d_c B) ] A
// in the filters, summed over the output's 4x4 tiles:
//   dW[k, c] = G^T [ sum over tiles of (A dY_k A^T) .* (B^T X_c B) ] G.
// The sums over tiles at each of the 36 points xi are outer-product GEMMs of exactly the form
// the channels-innermost kernel runs (conv2d_backward_weight_nhwc.h):
//   S[xi][k][c] += sum over tiles t of Z[xi][t][k] * V[xi][t][c],
// with Z = A dY A^T (a tile's 16 gradients to 36 values) and V = B^T X B (the forward's input
// transform, as rows of channels). 36 multiplies per tile and channel pair where direct
// summation does 144. Tiles go in blocks: the threads transform a block's tiles, then each
// thread multiplies its own points' GEMMs into its own sums: no partial sums are added and the
// result does not depend on the thread count. The last step maps each 6x6 sum to 3x3.
// A block's transformed tiles lie in groups of `group` tiles, point by point within a group:
// a GEMM reads a point's rows as one contiguous run per group. Point-major over the whole
// block, a tile's transform wrote 36 rows on 36 pages far apart; tile-major (one record per
// tile), a GEMM's every step read a new page and its run of 784 tiles (C5) outgrew the TLB.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu/conv2d_geom.h"

namespace fastcnn::cpu {

// Layout of one call, computed identically for sizing and running.
struct WinogradWeightPlan {
  ConvGeom g;
  int64_t tiles_h = 0, tiles_w = 0, tiles = 0;
  int64_t block = 0, blocks = 0;  // tiles per block
  int64_t width = 0;              // the outer-product kernel's panel width along channels
  int64_t parts = 1;              // slices of the channels' panels per point, one task each
  int threads = 1;
  int64_t group = 0, groups = 0;     // tiles per group, groups per block
  int64_t v_point = 0, z_point = 0;  // floats per point of a group: group rows and padding
  int64_t v_elems = 0, z_elems = 0;  // a block's transformed tiles
  int64_t s_stride = 0;              // the sums' per point, off multiples of 4 KB
  int64_t total_elems() const { return v_elems + z_elems + 36 * s_stride; }
};

// What a run of tiles' inputs held: whether every value was finite, and the largest
// magnitudes in X and in dY.
struct WinogradWeightScan {
  bool finite = true;
  float x_max = 0.f, dy_max = 0.f;
  void add(const WinogradWeightScan& other) {
    finite = finite && other.finite;
    x_max = std::max(x_max, other.x_max);
    dy_max = std::max(dy_max, other.dy_max);
  }
};

// The transforms, written once (conv2d_winograd_backward_weight_impl.h) and compiled per ISA.
struct WinogradWeightTransforms {
  // Tiles [t0, t1) of the call into the block starting at tile block0: for b = t - block0,
  // v[(b / group * 36 + xi) * v_point + b % group * C + c] = (B^T X B)[xi] and likewise z
  // with z_point and K for (A dY A^T)[xi].
  WinogradWeightScan (*tiles)(const WinogradWeightPlan& pl, const float* dy, const float* x,
                              int64_t block0, int64_t t0, int64_t t1, float* v, float* z);
  // dW[k, c] = G^T S[k, c] G for channels [c0, c1), from the sums s (xi stride s_stride).
  void (*weights)(const WinogradWeightPlan& pl, const float* s, int64_t c0, int64_t c1, float* dw);
};

WinogradWeightTransforms winograd_weight_transforms_generic();
#if defined(FASTCNN_X86)
WinogradWeightTransforms winograd_weight_transforms_avx2();
WinogradWeightTransforms winograd_weight_transforms_avx512();
#endif

// True when this weight gradient takes the Winograd path: float32, 3x3, stride 1, no
// dilation, one group, channels innermost in dY and X, enough channels, filters and tiles,
// and the algorithm not forced direct.
bool winograd_backward_weight_applies(const ConvGeom& g, bool float32);
WinogradWeightPlan winograd_weight_plan(const ConvGeom& g, int threads);
// Runs it; returns false, with dW unwritten, when dY or X holds Inf or NaN, whose products
// with the zero padding and the tiles' other values direct summation keeps apart, or when
// either one's largest magnitude lies below 2^-40. The transforms' differences make values
// far smaller than their inputs, whose products fall among the denormals sooner than direct
// summation's (with dY and X near 1e-15 the call took 2.3x as long, near 1e-20 160x):
// denormals are flushed to zero here, which moves a product by less than 2^-46 of
// max|dY| max|X| above that scale.
bool winograd_backward_weight(const WinogradWeightPlan& pl, const float* dy, const float* x,
                              float* dw, float* workspace);

}  // namespace fastcnn::cpu
