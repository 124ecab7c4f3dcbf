// The geometry of one convolution, shared by the GEMM and the depthwise paths.
#pragma once

#include <array>
#include <cstdint>

namespace fastcnn::cpu {

struct ConvGeom {
  int64_t N, C, H, W;  // image side
  int64_t K, Ho, Wo;   // output side
  int64_t R, S, G, Cg, Kg;
  int64_t sh, sw, ph, pw, dh, dw;
  std::array<int64_t, 4> xs, ws, ys;  // element strides (n, c, h, w) of image, weight, output
  int64_t P() const { return Ho * Wo; }
  int64_t RS() const { return R * S; }
};

// Where tap (c, rs) of a filter lies, in elements from the filter's start (rs = r * S + s).
inline int64_t filter_tap(const ConvGeom& g, int64_t c, int64_t rs) {
  return c * g.ws[1] + rs / g.S * g.ws[2] + rs % g.S * g.ws[3];
}

inline bool in_range(int64_t i, int64_t n) {
  return static_cast<uint64_t>(i) < static_cast<uint64_t>(n);
}

// 1x1, stride 1, no padding, rows stored back to back: output position p reads input
// position p, so runs of positions may cross output rows.
inline bool positions_are_flat(const ConvGeom& g) {
  return g.RS() == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0 && g.Wo == g.W &&
         g.Ho == g.H && g.xs[2] == g.W * g.xs[3];
}

}  // namespace fastcnn::cpu
