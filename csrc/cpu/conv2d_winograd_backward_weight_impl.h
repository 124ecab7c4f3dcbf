// The Winograd weight gradient's transforms, written once over kLanes lanes (channels for X,
// filters for dY and dW) and compiled per ISA next to the forward's (whose vector type, input
// transform and 2-D helper they share; conv2d_winograd_impl.h).
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu/conv2d_backward_weight_nhwc.h"
#include "cpu/conv2d_winograd_backward_weight.h"
#include "cpu/conv2d_winograd_impl.h"

namespace fastcnn::cpu {
namespace {

// r = A g: a column of four output gradients to six values, the adjoint of output_1d.
inline void grad_1d(const Vec* g, Vec* r) {
  const Vec even = g[0] + g[2], odd = g[1] + g[3];
  const Vec even4 = g[0] + 4.f * g[2], odd4 = 2.f * g[1] + 8.f * g[3];
  r[0] = g[0];
  r[1] = even + odd;
  r[2] = even - odd;
  r[3] = even4 + odd4;
  r[4] = even4 - odd4;
  r[5] = g[3];
}

// r = G^T s: six sums to three taps, the adjoint of weight_1d.
inline void weight_grad_1d(const Vec* s, Vec* r) {
  const Vec s12 = s[1] + s[2], d12 = s[1] - s[2], s34 = s[3] + s[4], d34 = s[3] - s[4];
  r[0] = 0.25f * s[0] - (1.f / 6.f) * s12 + (1.f / 24.f) * s34;
  r[1] = (1.f / 12.f) * d34 - (1.f / 6.f) * d12;
  r[2] = (1.f / 6.f) * (s34 - s12) + s[5];
}

// The lanes of an element-wise running sum of x - x: zero while every x was finite.
inline bool all_zero(Vec bad) {
  alignas(64) float b[kLanes];
  store(b, bad);
  bool zero = true;
  for (float f : b) zero = zero && f == 0.f;
  return zero;
}

// m, raised lane by lane to |v|.
inline Vec max_abs(Vec m, Vec v) {
  const Vec a = v < 0.f ? -v : v;
  return a > m ? a : m;
}

inline float max_lane(Vec m) {
  alignas(64) float b[kLanes];
  store(b, m);
  return *std::max_element(b, b + kLanes);
}

// n values from p (channels or filters, contiguous), zero above.
inline Vec load_run(const float* p, int n) {
  return n == kLanes ? load(p) : load_lanes(p, 1, n);
}
inline void store_run(float* p, int n, Vec v) {
  if (n == kLanes)
    store(p, v);
  else
    store_lanes(p, 1, n, v);
}

WinogradWeightScan weight_grad_tiles(const WinogradWeightPlan& pl, const float* dy, const float* x,
                                     int64_t block0, int64_t t0, int64_t t1, float* v, float* z) {
  const ConvGeom& g = pl.g;
  const int64_t per_image = pl.tiles_h * pl.tiles_w;
  Vec bad{}, x_max{}, dy_max{};
  Vec d[6][6], r[6][6], e[4][4];
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t n = t / per_image, oy = t % per_image / pl.tiles_w * 4, ox = t % pl.tiles_w * 4;
    // The tile's group's first row, and its row in the group.
    const int64_t first = (t - block0) / pl.group * 36, row = (t - block0) % pl.group;
    float* vt = v + first * pl.v_point + row * g.C;
    const float* xn = x + n * g.xs[0];
    for (int64_t c0 = 0; c0 < g.C; c0 += kLanes) {
      const int nl = static_cast<int>(std::min<int64_t>(kLanes, g.C - c0));
      Vec sum{};
      for (int i = 0; i < 6; ++i) {
        const int64_t ih = oy - g.ph + i;
        for (int j = 0; j < 6; ++j) {
          const int64_t iw = ox - g.pw + j;
          d[i][j] = in_range(ih, g.H) && in_range(iw, g.W)
                        ? load_run(xn + ih * g.xs[2] + iw * g.xs[3] + c0, nl)
                        : Vec{};
          sum += d[i][j];
          x_max = max_abs(x_max, d[i][j]);
        }
      }
      bad += sum - sum;
      transform_2d<6, 6, input_1d>(d, r);
      for (int xi = 0; xi < 36; ++xi) store_run(vt + xi * pl.v_point + c0, nl, r[xi / 6][xi % 6]);
    }
    float* zt = z + first * pl.z_point + row * g.K;
    const float* dyn = dy + n * g.ys[0];
    for (int64_t k0 = 0; k0 < g.K; k0 += kLanes) {
      const int nl = static_cast<int>(std::min<int64_t>(kLanes, g.K - k0));
      Vec sum{};
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) {
          e[i][j] = oy + i < g.Ho && ox + j < g.Wo
                        ? load_run(dyn + (oy + i) * g.ys[2] + (ox + j) * g.ys[3] + k0, nl)
                        : Vec{};
          sum += e[i][j];
          dy_max = max_abs(dy_max, e[i][j]);
        }
      bad += sum - sum;
      transform_2d<4, 6, grad_1d>(e, r);
      for (int xi = 0; xi < 36; ++xi) store_run(zt + xi * pl.z_point + k0, nl, r[xi / 6][xi % 6]);
    }
  }
  return {all_zero(bad), max_lane(x_max), max_lane(dy_max)};
}

// Channels [c0, c1) (c0 at a panel) a vector at a time, each filter's 36 sums read from the
// outer-product kernel's panels: filter by filter through a panel, so that each point's sums
// are read in order.
void weight_grad_weights(const WinogradWeightPlan& pl, const float* s, int64_t c0, int64_t c1,
                         float* dw) {
  const ConvGeom& g = pl.g;
  Vec sums[6][6], taps[3][3];
  for (int64_t panel = c0; panel < c1; panel += pl.width) {
    const int64_t panel_end = std::min(c1, panel + pl.width);
    for (int64_t k = 0; k < g.K; ++k)
      for (int64_t c = panel; c < panel_end; c += kLanes) {
        // Vectors stay in their panel, where they are contiguous.
        const int nl = static_cast<int>(std::min<int64_t>(kLanes, panel_end - c));
        const int64_t at = outer_at(c, k, g.K, pl.width);
        for (int xi = 0; xi < 36; ++xi)
          sums[xi / 6][xi % 6] = load_run(s + xi * pl.s_stride + at, nl);
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
