// The Winograd weight gradient's transforms, written once over the lanes of GradVec (channels
// for X, filters for dY and dW) and compiled per ISA next to the forward's (whose helpers,
// input transform and 2-D helper they share; conv2d_winograd_impl.h).
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu/conv2d_backward_weight_nhwc.h"
#include "cpu/conv2d_winograd_backward_weight.h"
#include "cpu/conv2d_winograd_impl.h"
#include "cpu/vector_width.h"

namespace fastcnn::cpu {
namespace {

// The ISA's vector, at least 8 floats (two xmm or NEON registers where vectors are 16 bytes;
// it divides every outer-product panel width, 8 to 32 floats, so panels hold whole ones). A tile's
// 36 values of 16 floats took two ymm each on AVX2 and lived on the stack: the transforms ran at 5x
// the AVX-512 build's time (C5 channels_last weight gradient 27.6 -> 12.0 ms with one thread;
// AVX-512 8.1).
constexpr int kGradLanes = std::max(kVectorBytes / 4, 8);
typedef float GradVec __attribute__((vector_size(kGradLanes * sizeof(float))));

// r = A g: a column of four output gradients to six values, the adjoint of output_1d.
inline void grad_1d(const GradVec* g, GradVec* r) {
  const GradVec even = g[0] + g[2], odd = g[1] + g[3];
  const GradVec even4 = g[0] + 4.f * g[2], odd4 = 2.f * g[1] + 8.f * g[3];
  r[0] = g[0];
  r[1] = even + odd;
  r[2] = even - odd;
  r[3] = even4 + odd4;
  r[4] = even4 - odd4;
  r[5] = g[3];
}

// r = G^T s: six sums to three taps, the adjoint of weight_1d.
inline void weight_grad_1d(const GradVec* s, GradVec* r) {
  const GradVec s12 = s[1] + s[2], d12 = s[1] - s[2], s34 = s[3] + s[4], d34 = s[3] - s[4];
  r[0] = 0.25f * s[0] - (1.f / 6.f) * s12 + (1.f / 24.f) * s34;
  r[1] = (1.f / 12.f) * d34 - (1.f / 6.f) * d12;
  r[2] = (1.f / 6.f) * (s34 - s12) + s[5];
}

// The lanes of an element-wise running sum of x - x: zero while every x was finite.
inline bool all_zero(GradVec bad) {
  alignas(64) float b[kGradLanes];
  store(b, bad);
  bool zero = true;
  for (float f : b) zero = zero && f == 0.f;
  return zero;
}

// m, raised lane by lane to |v|.
inline GradVec max_abs(GradVec m, GradVec v) {
  const GradVec a = v < 0.f ? -v : v;
  return a > m ? a : m;
}

inline float max_lane(GradVec m) {
  alignas(64) float b[kGradLanes];
  store(b, m);
  return *std::max_element(b, b + kGradLanes);
}

// One tile's In x In window of an h x w image from pixel (y0, x0), each pixel's n values at
// p + y * ys + x * xs (zeros outside the image), through Fn to 6 x 6, stored point by point
// at dst (point stride `point`). bad gathers x - x of the window's sum (zero while finite),
// largest the window's magnitudes.
template <int In, auto Fn>
inline void transform_window(const float* p, int64_t ys, int64_t xs, int64_t h, int64_t w,
                             int64_t y0, int64_t x0, int n, float* dst, int64_t point, GradVec& bad,
                             GradVec& largest) {
  GradVec in[In][In], out[6][6], sum{};
  for (int i = 0; i < In; ++i)
    for (int j = 0; j < In; ++j) {
      const bool inside = in_range(y0 + i, h) && in_range(x0 + j, w);
      in[i][j] = inside ? load_run<GradVec>(p + (y0 + i) * ys + (x0 + j) * xs, n) : GradVec{};
      sum += in[i][j];
      largest = max_abs(largest, in[i][j]);
    }
  bad += sum - sum;
  transform_2d<In, 6, Fn>(in, out);
  for (int xi = 0; xi < 36; ++xi) store_run(dst + xi * point, n, out[xi / 6][xi % 6]);
}

WinogradWeightScan weight_grad_tiles(const WinogradWeightPlan& pl, const float* dy, const float* x,
                                     int64_t block0, int64_t t0, int64_t t1, float* v, float* z) {
  const ConvGeom& g = pl.g;
  const int64_t per_image = pl.tiles_h * pl.tiles_w;
  GradVec bad{}, x_max{}, dy_max{};
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t n = t / per_image, oy = t % per_image / pl.tiles_w * 4, ox = t % pl.tiles_w * 4;
    // The tile's group's first row, and its row in the group.
    const int64_t first = (t - block0) / pl.group * 36, row = (t - block0) % pl.group;
    for (int64_t c0 = 0; c0 < g.C; c0 += kGradLanes)
      transform_window<6, input_1d<GradVec>>(
          x + n * g.xs[0] + c0, g.xs[2], g.xs[3], g.H, g.W, oy - g.ph, ox - g.pw,
          static_cast<int>(std::min<int64_t>(kGradLanes, g.C - c0)),
          v + first * pl.v_point + row * g.C + c0, pl.v_point, bad, x_max);
    for (int64_t k0 = 0; k0 < g.K; k0 += kGradLanes)
      transform_window<4, grad_1d>(dy + n * g.ys[0] + k0, g.ys[2], g.ys[3], g.Ho, g.Wo, oy, ox,
                                   static_cast<int>(std::min<int64_t>(kGradLanes, g.K - k0)),
                                   z + first * pl.z_point + row * g.K + k0, pl.z_point, bad,
                                   dy_max);
  }
  return {all_zero(bad), max_lane(x_max), max_lane(dy_max)};
}

// Channels [c0, c1) (c0 at a panel) a vector at a time, each filter's 36 sums read from the
// outer-product kernel's panels: filter by filter through a panel, so that each point's sums
// are read in order.
void weight_grad_weights(const WinogradWeightPlan& pl, const float* s, int64_t c0, int64_t c1,
                         float* dw) {
  const ConvGeom& g = pl.g;
  GradVec sums[6][6], taps[3][3];
  for (int64_t panel = c0; panel < c1; panel += pl.width) {
    const int64_t panel_end = std::min(c1, panel + pl.width);
    for (int64_t k = 0; k < g.K; ++k)
      for (int64_t c = panel; c < panel_end; c += kGradLanes) {
        // Vectors stay in their panel, where they are contiguous.
        const int nl = static_cast<int>(std::min<int64_t>(kGradLanes, panel_end - c));
        const int64_t at = outer_at(c, k, g.K, pl.width);
        for (int xi = 0; xi < 36; ++xi)
          sums[xi / 6][xi % 6] = load_run<GradVec>(s + xi * pl.s_stride + at, nl);
        transform_2d<6, 3, weight_grad_1d>(sums, taps);
        for (int rs = 0; rs < 9; ++rs) {
          float* dst = dw + k * g.ws[0] + filter_tap(g, c, rs);
          if (g.ws[1] == 1)  // channels_last filters
            store_run(dst, nl, taps[rs / 3][rs % 3]);
          else
            store_lanes(dst, g.ws[1], nl, taps[rs / 3][rs % 3]);
        }
      }
  }
}

WinogradWeightTransforms make_winograd_weight_transforms() {
  return {&weight_grad_tiles, &weight_grad_weights};
}

}  // namespace
}  // namespace fastcnn::cpu
