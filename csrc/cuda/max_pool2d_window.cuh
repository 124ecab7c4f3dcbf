// Max pooling's per-element logic, shared by the forward and the two backward kernels
// (max_pool2d.cu) and runnable on the host: window maxima with torch's tie and NaN rules,
// the saved argmax (indices or compact offsets), and each input's gathered gradient.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cuda/common.cuh"

namespace fastcnn::cuda {

struct PoolShape {
  int64_t N, C, H, W, Ho, Wo;
  int64_t xs[4], ys[4];  // element strides of n, c, h, w (input, output)
  int kh, kw, sh, sw, ph, pw, dh, dw;
  bool y_channels_last, x_channels_last;
};

// The max of window (oh, ow) of a plane and its tap r * kw + s, -1 when the window holds
// no input element. Ties keep the first maximum in window order; a NaN wins (the last one).
template <typename T, typename Index>
FASTCNN_HD int window_max(const T* __restrict__ plane, const PoolShape& g, Index oh, Index ow,
                          float& best) {
  const Index h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
  best = -INFINITY;
  int tap = -1;
  for (int r = 0; r < g.kh; ++r) {
    const Index ih = h0 + r * g.dh;
    if (ih < 0 || ih >= g.H) continue;
    for (int s = 0; s < g.kw; ++s) {
      const Index iw = w0 + s * g.dw;
      if (iw < 0 || iw >= g.W) continue;
      const float v = to_float(plane[ih * g.xs[2] + iw * g.xs[3]]);
      if (tap < 0 || v > best || v != v) {
        best = v;
        tap = r * g.kw + s;
      }
    }
  }
  return tap;
}

// The saved argmax and the tap it stands for. Offsets are taps (kh * kw: no input
// element); indices are flat plane positions (-1: none), as torch returns them.
template <typename S>
struct Saved {
  FASTCNN_HD static S encode(int tap, const PoolShape& g, int64_t, int64_t) {
    return static_cast<S>(tap < 0 ? g.kh * g.kw : tap);
  }
  FASTCNN_HD static int decode(S v, const PoolShape& g, int64_t, int64_t) {
    const int64_t tap = static_cast<int64_t>(v);
    return tap < 0 || tap >= g.kh * g.kw ? -1 : static_cast<int>(tap);
  }
};
template <>
struct Saved<int64_t> {
  FASTCNN_HD static int64_t encode(int tap, const PoolShape& g, int64_t oh, int64_t ow) {
    if (tap < 0) return -1;
    const int64_t ih = oh * g.sh - g.ph + tap / g.kw * g.dh;
    const int64_t iw = ow * g.sw - g.pw + tap % g.kw * g.dw;
    return ih * g.W + iw;
  }
  // An index that is not a tap of this window (a foreign or corrupt tensor) counts as no
  // argmax, so a bad index never addresses memory.
  FASTCNN_HD static int decode(int64_t v, const PoolShape& g, int64_t oh, int64_t ow) {
    if (v < 0 || v >= g.H * g.W) return -1;
    const int64_t dh = v / g.W - (oh * g.sh - g.ph), dw = v % g.W - (ow * g.sw - g.pw);
    if (dh < 0 || dw < 0 || dh % g.dh != 0 || dw % g.dw != 0) return -1;
    const int64_t r = dh / g.dh, s = dw / g.dw;
    return r < g.kh && s < g.kw ? static_cast<int>(r * g.kw + s) : -1;
  }
};
struct NoSaved {};  // nothing saved: the backward recomputes the argmax

// Output i (flat, in the output's memory order): its max, and the saved argmax.
template <typename T, typename S, typename Index>
FASTCNN_HD void forward_one(const T* __restrict__ x, T* __restrict__ y, S* __restrict__ saved,
                            const PoolShape& g, Index i) {
  const Coords<Index> o = coords_of<Index>(i, g.C, g.Ho, g.Wo, g.y_channels_last);
  float best;
  const int tap = window_max<T, Index>(x + o.n * g.xs[0] + o.c * g.xs[1], g, o.h, o.w, best);
  y[i] = from_float<T>(best);
  if constexpr (!std::is_same_v<S, NoSaved>) saved[i] = Saved<S>::encode(tap, g, o.h, o.w);
}

// The tap of output o's argmax (o at flat position i): saved, or recomputed.
template <typename T, typename S, typename Index>
FASTCNN_HD int argmax_tap(const T* __restrict__ x, const S* __restrict__ saved, const PoolShape& g,
                          Index i, const Coords<Index>& o) {
  if constexpr (std::is_same_v<S, NoSaved>) {
    float best;
    return window_max<T, Index>(x + o.n * g.xs[0] + o.c * g.xs[1], g, o.h, o.w, best);
  } else {
    return Saved<S>::decode(saved[i], g, o.h, o.w);
  }
}

// Where output i's gradient goes: the input offset of its argmax; false when the window
// has none (or a saved offset points outside the input).
template <typename T, typename S, typename Index>
FASTCNN_HD bool scatter_target(const T* __restrict__ x, const S* __restrict__ saved,
                               const PoolShape& g, Index i, Index& dst) {
  const Coords<Index> o = coords_of<Index>(i, g.C, g.Ho, g.Wo, g.y_channels_last);
  const int tap = argmax_tap<T, S, Index>(x, saved, g, i, o);
  if (tap < 0) return false;
  const Index ih = o.h * g.sh - g.ph + tap / g.kw * g.dh;
  const Index iw = o.w * g.sw - g.pw + tap % g.kw * g.dw;
  if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) return false;
  dst = o.n * g.xs[0] + o.c * g.xs[1] + ih * g.xs[2] + iw * g.xs[3];
  return true;
}

// The gradient of input i (flat, in the input's memory order): the sum, in a fixed order,
// of dy over the windows that cover it and whose argmax it is.
template <typename T, typename S, typename Index>
FASTCNN_HD float gather_one(const T* __restrict__ dy, const T* __restrict__ x,
                            const S* __restrict__ saved, const PoolShape& g, Index i) {
  const Coords<Index> in = coords_of<Index>(i, g.C, g.H, g.W, g.x_channels_last);
  float sum = 0.f;
  for (int r = 0; r < g.kh; ++r) {
    const Index th = in.h + g.ph - r * g.dh;  // oh * sh of the window whose tap r is h
    if (th < 0) break;
    if (th % g.sh != 0 || th / g.sh >= g.Ho) continue;
    for (int s = 0; s < g.kw; ++s) {
      const Index tw = in.w + g.pw - s * g.dw;
      if (tw < 0) break;
      if (tw % g.sw != 0 || tw / g.sw >= g.Wo) continue;
      const Coords<Index> o{in.n, in.c, th / g.sh, tw / g.sw};
      const Index j = o.n * g.ys[0] + o.c * g.ys[1] + o.h * g.ys[2] + o.w * g.ys[3];
      if (argmax_tap<T, S, Index>(x, saved, g, j, o) == r * g.kw + s) sum += to_float(dy[j]);
    }
  }
  return sum;
}

}  // namespace fastcnn::cuda
