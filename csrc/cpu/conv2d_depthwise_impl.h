// The depthwise fast paths, written once over the ISA's native vectors (cpu/vector_width.h:
// one zmm, ymm or xmm) and compiled per ISA: each ISA's translation unit includes this file,
// and the unnamed namespace gives every one its own copy built with its own flags. (Over
// 64-byte vectors on every ISA, AVX2's nine-tap sums took two ymm each and spilled: 3.3-5.2x
// the AVX-512 build's time.)
//
// NCHW: rows of a plane are staged, zero-padded and split by column phase (column mod stride),
// into a small stack ring of padded rows, so every tap of a vector of outputs along the row is
// one unaligned load at a fixed offset. NHWC: vectors run along channels.
//
// Padding is explicit zeros in every path: an Inf or NaN weight (forward) or gradient
// (backward-weight) over the padding gives NaN, as on a zero-padded input.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cpu/conv2d_depthwise.h"
#include "cpu/prefetch.h"
#include "cpu/vector_width.h"

namespace fastcnn::cpu {
namespace {

// The NHWC weight gradient's channel block: one vector, but 64 bytes where vectors are 16
// (four xmm a sum, some spilled): per pixel its walk computes addresses and prefetches for
// the whole block, which over 16 bytes cost more than the spills (portable build, DW
// channels_last: 16 bytes 0.75x the 64-byte block's speed, 32 bytes 0.89x).
constexpr int kWeightBlockBytes = kVectorBytes < 32 ? 64 : kVectorBytes;
static_assert(kVectorBytes <= kDepthwiseVecBytes && kWeightBlockBytes <= kDepthwiseVecBytes,
              "the driver reckons with the widest");

template <typename T, int kBytes = kVectorBytes>
struct Vec {
  static constexpr int lanes = kBytes / sizeof(T);
  typedef T V __attribute__((vector_size(kBytes)));
  using Index = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  typedef Index I __attribute__((vector_size(kBytes)));

  static V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static void store(T* p, V v) { std::memcpy(p, &v, sizeof v); }
  static V set1(T a) { return V{} + a; }
  // v with lanes n and above zeroed (a select, so an Inf or NaN there does not leak in).
  static V first(V v, int64_t n) {
    I lane;
    for (int l = 0; l < lanes; ++l) lane[l] = l;
    return lane < static_cast<Index>(n) ? v : V{};
  }
  static T sum(V v) {
    T s = T(0);
    for (int l = 0; l < lanes; ++l) s += v[l];
    return s;
  }
};

// Padded rows of one input plane: ring slot i % rows holds padded row i (input row i - ph),
// stride phases one after another, each `phase_len` long (zeros past the row).
template <typename T>
struct Ring {
  T* buf;
  int64_t rows, phase_len, phases;
  T* slot(int64_t i) const { return buf + i % rows * phases * phase_len; }
};

template <typename T>
void fill_row(const ConvGeom& g, const T* plane, int64_t padded_row, T* dst, int64_t phase_len) {
  const int64_t ih = padded_row - g.ph;
  if (!in_range(ih, g.H)) {
    std::fill(dst, dst + phase_len * g.sw, T(0));
    return;
  }
  const T* row = plane + ih * g.xs[2];
  if (g.sw == 1 && g.xs[3] == 1) {
    std::fill(dst, dst + g.pw, T(0));
    std::memcpy(dst + g.pw, row, g.W * sizeof(T));
    std::fill(dst + g.pw + g.W, dst + phase_len, T(0));
    return;
  }
  for (int64_t p = 0; p < g.sw; ++p)
    for (int64_t j = 0; j < phase_len; ++j) {
      const int64_t iw = j * g.sw + p - g.pw;
      dst[p * phase_len + j] = in_range(iw, g.W) ? row[iw * g.xs[3]] : T(0);
    }
}

// Makes padded rows [oh * sh, oh * sh + rows) present, filling those past `filled`: the rows
// output row oh reads and the ones the next output row adds.
template <typename T>
void advance(const ConvGeom& g, const T* plane, const Ring<T>& ring, int64_t oh, int64_t& filled) {
  const int64_t lo = oh * g.sh, hi = lo + ring.rows;
  for (int64_t i = std::max(filled, lo); i < hi; ++i)
    fill_row(g, plane, i, ring.slot(i), ring.phase_len);
  filled = hi;
}

// Where tap s reads, relative to the output column, in a padded row of the ring.
inline int64_t tap_offset(const ConvGeom& g, int64_t s, int64_t phase_len) {
  return s * g.dw % g.sw * phase_len + s * g.dw / g.sw;
}

// Output vectors computed side by side: independent FMA chains hide the FMA latency.
constexpr int kVecsPerStep = 4;

// The filter size is a template argument where it is common (3x3: the taps unroll into
// registers), 0 where it is read from g. fixed_size(g, f) calls f with kR = kS of g's filter.
template <typename F>
void fixed_size(const ConvGeom& g, const F& f) {
  if (g.R == 3 && g.S == 3) return f(std::integral_constant<int, 3>{});
  f(std::integral_constant<int, 0>{});
}

template <typename T, int kR, int kS>
void nchw_forward_plane_fixed(const ConvGeom& g, const T* plane, const T* w, const T* bias,
                              T* y_image, int64_t c, bool relu) {
  using W = Vec<T>;
  using V = typename W::V;
  constexpr int L = W::lanes;
  const int64_t R = kR ? kR : g.R, S = kS ? kS : g.S;
  alignas(64) T buf[kDepthwiseRingBytes / sizeof(T)];
  const Ring<T> ring{buf, depthwise_ring_rows(g), depthwise_phase_len(g, L), g.sw};
  int64_t off[kS ? kS : kDepthwiseMaxTaps];
  for (int64_t s = 0; s < S; ++s) off[s] = tap_offset(g, s, ring.phase_len);
  // Vectors start at multiples of L; the last one overlaps the one before instead of running
  // past the row (rows narrower than L are computed whole and stored in part).
  const int64_t last = std::max<int64_t>(g.Wo - L, 0);
  int64_t filled = 0;
  for (int64_t oh = 0; oh < g.Ho; ++oh) {
    advance(g, plane, ring, oh, filled);
    const T* rows[kR ? kR : kDepthwiseMaxTaps];
    for (int64_t r = 0; r < R; ++r) rows[r] = ring.slot(oh * g.sh + r * g.dh);
    for (int64_t k = c * g.Kg; k < (c + 1) * g.Kg; ++k) {
      T taps[kR ? kR * kS : kDepthwiseMaxTaps];
      for (int64_t r = 0; r < R; ++r)
        for (int64_t s = 0; s < S; ++s)
          taps[r * S + s] = w[k * g.ws[0] + r * g.ws[2] + s * g.ws[3]];
      const V b = W::set1(bias ? bias[k] : T(0));
      T* o = y_image + k * g.ys[1] + oh * g.ys[2];
      for (int64_t ow0 = 0; ow0 < g.Wo; ow0 += kVecsPerStep * L) {
        int64_t at[kVecsPerStep];
        V acc[kVecsPerStep];
        for (int j = 0; j < kVecsPerStep; ++j) {
          at[j] = std::min(ow0 + j * L, last);
          acc[j] = b;
        }
        for (int64_t r = 0; r < R; ++r)
          for (int64_t s = 0; s < S; ++s)
            for (int j = 0; j < kVecsPerStep; ++j)
              acc[j] += taps[r * S + s] * W::load(rows[r] + off[s] + at[j]);
        for (int j = 0; j < kVecsPerStep; ++j) {
          const V v = relu ? relu_lanes(acc[j]) : acc[j];
          if (g.Wo >= L) {
            W::store(o + at[j], v);
          } else {
            for (int64_t i = 0; i < g.Wo; ++i) o[i] = v[i];
          }
        }
      }
    }
  }
}

template <typename T>
void nchw_forward_plane(const ConvGeom& g, const T* plane, const T* w, const T* bias, T* y_image,
                        int64_t c, bool relu) {
  fixed_size(g, [&](auto k) {
    nchw_forward_plane_fixed<T, k.value, k.value>(g, plane, w, bias, y_image, c, relu);
  });
}

template <typename T, int kR, int kS>
void nchw_weight_filter_fixed(const ConvGeom& g, const T* dy, const T* x, int64_t k, T* dw) {
  using W = Vec<T>;
  using V = typename W::V;
  constexpr int L = W::lanes;
  const int64_t R = kR ? kR : g.R, S = kS ? kS : g.S;
  alignas(64) T buf[kDepthwiseRingBytes / sizeof(T)];
  const Ring<T> ring{buf, depthwise_ring_rows(g), depthwise_phase_len(g, L), g.sw};
  int64_t off[kS ? kS : kDepthwiseMaxTaps];
  for (int64_t s = 0; s < S; ++s) off[s] = tap_offset(g, s, ring.phase_len);
  V acc[kR ? kR * kS : kDepthwiseMaxTaps];
  for (int64_t rs = 0; rs < R * S; ++rs) acc[rs] = V{};
  const int64_t full = g.Wo / L * L;
  for (int64_t n = 0; n < g.N; ++n) {
    const T* plane = x + n * g.xs[0] + k / g.Kg * g.xs[1];
    int64_t filled = 0;
    for (int64_t oh = 0; oh < g.Ho; ++oh) {
      advance(g, plane, ring, oh, filled);
      const T* rows[kR ? kR : kDepthwiseMaxTaps];
      for (int64_t r = 0; r < R; ++r) rows[r] = ring.slot(oh * g.sh + r * g.dh);
      const T* d = dy + n * g.ys[0] + k * g.ys[1] + oh * g.ys[2];
      // Every tap of one vector of gradients: R*S independent sums.
      for (int64_t ow = 0; ow < full; ow += L) {
        const V dv = W::load(d + ow);
        for (int64_t r = 0; r < R; ++r)
          for (int64_t s = 0; s < S; ++s) acc[r * S + s] += dv * W::load(rows[r] + off[s] + ow);
      }
      if (full < g.Wo) {
        alignas(64) T tail[L] = {};
        std::memcpy(tail, d + full, (g.Wo - full) * sizeof(T));
        const V dv = W::load(tail);
        for (int64_t r = 0; r < R; ++r)
          for (int64_t s = 0; s < S; ++s)
            acc[r * S + s] += W::first(dv * W::load(rows[r] + off[s] + full), g.Wo - full);
      }
    }
  }
  for (int64_t rs = 0; rs < R * S; ++rs) dw[rs] = W::sum(acc[rs]);
}

template <typename T>
void nchw_weight_filter(const ConvGeom& g, const T* dy, const T* x, int64_t k, T* dw) {
  fixed_size(g, [&](auto n) { nchw_weight_filter_fixed<T, n.value, n.value>(g, dy, x, k, dw); });
}

// NHWC windows: where each tap reads relative to the window's first pixel, and whether a
// window lies inside the image (its taps then read without bounds checks). With the size fixed
// the tap loops have constant bounds, so sums indexed by tap stay in registers (with the size
// read into a member they lived on the stack: a load and a store per FMA).
template <int kR, int kS>
struct Window {
  int64_t R_, S_, off[kR ? kR * kS : kDepthwiseMaxTaps];
  explicit Window(const ConvGeom& g) : R_(g.R), S_(g.S) {
    for (int64_t r = 0; r < R(); ++r)
      for (int64_t s = 0; s < S(); ++s) off[r * S() + s] = r * g.dh * g.xs[2] + s * g.dw * g.xs[3];
  }
  int64_t R() const { return kR ? kR : R_; }
  int64_t S() const { return kS ? kS : S_; }
  int64_t taps() const { return R() * S(); }
};

inline bool window_inside(const ConvGeom& g, int64_t ih0, int64_t iw0) {
  return ih0 >= 0 && ih0 + (g.R - 1) * g.dh < g.H && iw0 >= 0 && iw0 + (g.S - 1) * g.dw < g.W;
}

// Calls f(rs, p) for every tap of the window at (ih0, iw0) of one image, p pointing at the
// pixel it reads or null over the padding (zeros).
template <int kR, int kS, typename T, typename F>
inline void for_each_tap(const ConvGeom& g, const Window<kR, kS>& win, const T* image, int64_t ih0,
                         int64_t iw0, const F& f) {
  if (window_inside(g, ih0, iw0)) {
    const T* base = image + ih0 * g.xs[2] + iw0 * g.xs[3];
    for (int64_t rs = 0; rs < win.taps(); ++rs) f(rs, base + win.off[rs]);
    return;
  }
  for (int64_t r = 0; r < win.R(); ++r)
    for (int64_t s = 0; s < win.S(); ++s) {
      const int64_t ih = ih0 + r * g.dh, iw = iw0 + s * g.dw;
      const bool in = in_range(ih, g.H) && in_range(iw, g.W);
      f(r * win.S() + s, in ? image + ih * g.xs[2] + iw * g.xs[3] : nullptr);
    }
}

// Channel vectors start at multiples of lanes, the last one overlapping the one before
// instead of running past the pixel.
template <int L>
inline int64_t channel_vector(const ConvGeom& g, int64_t c0) {
  return std::min<int64_t>(c0, g.K - L);
}

// Output pixels computed together by nhwc_forward_block: each tap's weight vector and each
// input pixel's vector is loaded once for all of them, where the pixel-by-pixel loop loaded
// both for every FMA. At 6 a 3x3 block holds its sums, a kernel row's inputs and a weight in
// 15 of AVX2's 16 ymm (4 took 1.04-1.07x as long); SSE2 has no FMA, its products need a
// register more, and 6 spilled (0.83-0.95x the pixel-by-pixel loop, 4 1.0-1.3x); with AVX-512
// 2, 3 and 4 measured alike and 8 1.05-1.10x slower (DW, channels_last). The weight
// gradient's walk takes blocks of the same size (3x3: nine sums, the block's dY vectors and
// one input, 16 ymm at 6).
constexpr int kPixelBlock = kVectorBytes == 32 ? 6 : 4;

// Whether the kPixelBlock windows from (ih0, iw0) on go as a block: a fixed filter width,
// unit column step, and the first and last windows (so all between) inside the image.
template <int kS>
inline bool block_inside(const ConvGeom& g, int64_t ih0, int64_t iw0) {
  return kS != 0 && g.sw == 1 && g.dw == 1 && window_inside(g, ih0, iw0) &&
         window_inside(g, ih0, iw0 + kPixelBlock - 1);
}

// kPixelBlock adjacent output pixels of a row, at unit column step (stride and dilation 1
// along the row) and with every window inside the image: x_first is the first window's
// top-left pixel, o the first output pixel. Channel vectors inner, so each input pixel's
// channels are read as one run, in the order of the pixel-by-pixel loop.
template <typename T, int kR, int kS>
inline void nhwc_forward_block(const ConvGeom& g, const T* x_first, const T* wt, const T* bias,
                               T* o, bool relu) {
  using W = Vec<T>;
  using V = typename W::V;
  constexpr int L = W::lanes, P = kPixelBlock, kCols = P + kS - 1;
  for (int64_t c0 = 0; c0 < g.K; c0 += L) {
    const int64_t c = channel_vector<L>(g, c0);
    V acc[P];
    const V b = bias ? W::load(bias + c) : V{};
    for (int p = 0; p < P; ++p) acc[p] = b;
#pragma GCC unroll 8
    for (int r = 0; r < kR; ++r) {
      const T* xr = x_first + r * g.dh * g.xs[2] + c;
      V xv[kCols];
#pragma GCC unroll 16
      for (int j = 0; j < kCols; ++j) xv[j] = W::load(xr + j * g.xs[3]);
#pragma GCC unroll 8
      for (int s = 0; s < kS; ++s) {
        const V w = W::load(wt + (r * kS + s) * g.K + c);
#pragma GCC unroll 16
        for (int p = 0; p < P; ++p) acc[p] += w * xv[p + s];
      }
    }
    for (int p = 0; p < P; ++p) W::store(o + p * g.ys[3] + c, relu ? relu_lanes(acc[p]) : acc[p]);
  }
}

// One NHWC output row; wt holds the taps as [R*S][K]. Pixels whose windows lie inside the
// image go kPixelBlock at a time where the filter size is fixed and the column step is 1; the
// others (and every pixel of other layers) one at a time.
template <typename T, int kR, int kS>
void nhwc_forward_row_fixed(const ConvGeom& g, const T* x_image, const T* wt, const T* bias,
                            T* y_row, int64_t oh, bool relu) {
  using W = Vec<T>;
  using V = typename W::V;
  constexpr int L = W::lanes;
  const Window<kR, kS> win(g);
  const int64_t ih0 = oh * g.sh - g.ph;
  for (int64_t ow = 0; ow < g.Wo;) {
    T* o = y_row + ow * g.ys[3];
    const int64_t iw0 = ow * g.sw - g.pw;
    if constexpr (kS != 0) {
      if (block_inside<kS>(g, ih0, iw0)) {
        nhwc_forward_block<T, kR, kS>(g, x_image + ih0 * g.xs[2] + iw0 * g.xs[3], wt, bias, o,
                                      relu);
        ow += kPixelBlock;
        continue;
      }
    }
    for (int64_t c0 = 0; c0 < g.K; c0 += kVecsPerStep * L) {
      int64_t c[kVecsPerStep];
      V acc[kVecsPerStep];
      for (int j = 0; j < kVecsPerStep; ++j) {
        c[j] = channel_vector<L>(g, c0 + j * L);
        acc[j] = bias ? W::load(bias + c[j]) : V{};
      }
      for_each_tap(g, win, x_image, ih0, iw0, [&](int64_t rs, const T* xi) {
        for (int j = 0; j < kVecsPerStep; ++j)
          acc[j] += W::load(wt + rs * g.K + c[j]) * (xi ? W::load(xi + c[j]) : V{});
      });
      for (int j = 0; j < kVecsPerStep; ++j) W::store(o + c[j], relu ? relu_lanes(acc[j]) : acc[j]);
    }
    ++ow;
  }
}

template <typename T>
void nhwc_forward_row(const ConvGeom& g, const T* x_image, const T* wt, const T* bias, T* y_row,
                      int64_t oh, bool relu) {
  fixed_size(g, [&](auto k) {
    nhwc_forward_row_fixed<T, k.value, k.value>(g, x_image, wt, bias, y_row, oh, relu);
  });
}

// What row v - tile's walk asks for, a pixel at a time: row v's dY row and the bottom input
// row of its windows, which the rows before did not read when the stride down is 1 (with a
// larger stride the rows above it go unasked). Element offsets from the block's first
// channel (-1: no such row); column j * xs[3] of the input row, j from window 0's first
// column the window before it does not cover. Pixels lie a whole row of channels apart
// (C = 256: 1 KB), a stride the hardware prefetchers did not follow: 77 % of the walk's
// samples waited on these loads.
struct RowAhead {
  int64_t dy = -1, x = -1, iw0 = 0;
  RowAhead(const ConvGeom& g, int64_t v) {
    if (v >= g.N * g.Ho) return;
    const int64_t n = v / g.Ho, oh = v % g.Ho;
    dy = n * g.ys[0] + oh * g.ys[2];
    const int64_t ih = oh * g.sh - g.ph + (g.R - 1) * g.dh;
    if (in_range(ih, g.H)) x = n * g.xs[0] + ih * g.xs[2];
    iw0 = (g.S - 1) * g.dw - g.pw - g.sw + 1;
  }
};

// kPixelBlock adjacent output pixels' products added to one channel block's tap sums, at unit
// column step with every window inside the image (as nhwc_forward_block): each dY vector and
// each input pixel is loaded once for the block, not once per tap. Each sum takes its
// products in the order of the pixel-by-pixel walk.
template <typename T, int kR, int kS>
inline void nhwc_weight_block(const ConvGeom& g, const T* dy_first, const T* x_first,
                              typename Vec<T, kWeightBlockBytes>::V* acc) {
  using W = Vec<T, kWeightBlockBytes>;
  using V = typename W::V;
  constexpr int P = kPixelBlock;
  V d[P];
  for (int p = 0; p < P; ++p) d[p] = W::load(dy_first + p * g.ys[3]);
#pragma GCC unroll 8
  for (int r = 0; r < kR; ++r) {
    const T* xr = x_first + r * g.dh * g.xs[2];
#pragma GCC unroll 16
    for (int j = 0; j < P + kS - 1; ++j) {
      const V xv = W::load(xr + j * g.xs[3]);
#pragma GCC unroll 8
      for (int s = 0; s < kS; ++s)
        if (j - s >= 0 && j - s < P) acc[r * kS + s] += d[j - s] * xv;
    }
  }
}

// The batch's sums for channel blocks [b0, b1), stored as acc[(b * R*S + rs) * lanes]. Output
// rows go in tiles whose dY rows, and the input rows under them, stay cached while each block
// passes over them with its sums in registers: a block reads its run of channels of each pixel
// (kWeightBlockBytes), so one pass over the whole batch per block fetched every line from memory
// once per block, a pixel apart. (Walking a few pixels at a time through every block, sums in
// memory, measured twice as slow on 2 threads.)
template <typename T, int kR, int kS>
void nhwc_weight_blocks_fixed(const ConvGeom& g, const T* dy, const T* x, int64_t b0, int64_t b1,
                              T* acc_out) {
  using W = Vec<T, kWeightBlockBytes>;
  using V = typename W::V;
  constexpr int L = W::lanes;
  const Window<kR, kS> win(g);
  const int64_t RS = win.taps(), rows = g.N * g.Ho;
  const int64_t row_bytes = std::max<int64_t>(1, g.Wo * g.ys[3] * int64_t{sizeof(T)});
  const int64_t tile = std::max<int64_t>(1, kDepthwiseTileBytes / row_bytes);
  std::fill(acc_out + b0 * RS * L, acc_out + b1 * RS * L, T(0));
  for (int64_t v0 = 0; v0 < rows; v0 += tile) {
    const int64_t v1 = std::min(rows, v0 + tile);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t c = channel_vector<L>(g, b * L);
      V acc[kR ? kR * kS : kDepthwiseMaxTaps];
      for (int64_t rs = 0; rs < RS; ++rs) acc[rs] = V{};
      for (int64_t v = v0; v < v1; ++v) {
        const int64_t n = v / g.Ho, oh = v % g.Ho, ih0 = oh * g.sh - g.ph;
        const RowAhead ahead(g, v + (v1 - v0));
        const T* dy_row = dy + n * g.ys[0] + oh * g.ys[2] + c;
        const T* x_image = x + n * g.xs[0] + c;
        // Asked for here: GCC 12 compiled the prefetches away from a member of RowAhead.
        auto ask_ahead = [&](int64_t ow) {
          if (ahead.dy >= 0) prefetch_at<2>(dy + c, ahead.dy + ow * g.ys[3]);
          if (ahead.x >= 0)
            for (int64_t j = ow * g.sw + ahead.iw0; j < (ow + 1) * g.sw + ahead.iw0; ++j)
              prefetch_at<2>(x + c, ahead.x + j * g.xs[3]);
        };
        for (int64_t ow = 0; ow < g.Wo;) {
          const int64_t iw0 = ow * g.sw - g.pw;
          if constexpr (kS != 0) {
            if (block_inside<kS>(g, ih0, iw0)) {
              for (int p = 0; p < kPixelBlock; ++p) ask_ahead(ow + p);
              nhwc_weight_block<T, kR, kS>(g, dy_row + ow * g.ys[3],
                                           x_image + ih0 * g.xs[2] + iw0 * g.xs[3], acc);
              ow += kPixelBlock;
              continue;
            }
          }
          ask_ahead(ow);
          const V d = W::load(dy_row + ow * g.ys[3]);
          for_each_tap(g, win, x_image, ih0, iw0,
                       [&](int64_t rs, const T* xi) { acc[rs] += d * (xi ? W::load(xi) : V{}); });
          ++ow;
        }
      }
      T* out = acc_out + b * RS * L;
      for (int64_t rs = 0; rs < RS; ++rs) W::store(out + rs * L, W::load(out + rs * L) + acc[rs]);
    }
  }
}

template <typename T>
void nhwc_weight_blocks(const ConvGeom& g, const T* dy, const T* x, int64_t b0, int64_t b1,
                        T* acc) {
  fixed_size(g,
             [&](auto k) { nhwc_weight_blocks_fixed<T, k.value, k.value>(g, dy, x, b0, b1, acc); });
}

template <typename T>
DepthwiseKernels<T> make_kernels() {
  using Block = Vec<T, kWeightBlockBytes>;
  return {Block::lanes, nchw_forward_plane<T>, nchw_weight_filter<T>, nhwc_forward_row<T>,
          nhwc_weight_blocks<T>};
}

inline DepthwiseKernelSet make_depthwise_kernels() {
  return {make_kernels<float>(), make_kernels<double>()};
}

}  // namespace
}  // namespace fastcnn::cpu
