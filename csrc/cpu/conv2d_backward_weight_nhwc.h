// Backward-weight over channels-innermost operands, read in place: for each filter tap (r, s),
//   dW[k, c, r, s] = sum over output positions p of dY[p, k] * X[pixel(p, r, s), c],
// a sum of outer products of dY's row of filters at p with X's row of channels under the tap.
// The kernel keeps a tile of filters x channels in registers across the positions of a block
// (vectors along one axis, the other broadcast), so neither operand is packed; a tap's padding
// is skipped by restricting each output row to the columns whose pixel lies inside the image.
// Blocks of output rows stay in L2 while every tap and tile passes over them. Threads take
// slices of the output rows and write partial sums to the workspace, added in a fixed order:
// results depend only on the thread count.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu/conv2d_geom.h"
#include "cpu/conv2d_packing.h"
#include "cpu/isa_select.h"
#include "cpu/parallel.h"

namespace fastcnn::cpu {

// Positions p in [0, len): vector operand at a + p * a_step, broadcast operand at b + p * b_step.
template <typename T>
struct OuterRun {
  const T* a;
  const T* b;
  int64_t len;
};

// Where element (i, j) of an m x n tile lies in its buffer: panels of `width` (the kernel's
// register tile) along i, each n rows of `width`, so that a register tile's sums are stored
// to one contiguous run (rows of a long i would alias in L1 and spread over pages).
inline int64_t outer_at(int64_t i, int64_t j, int64_t n, int64_t width) {
  return i / width * width * n + j * width + i % width;
}

// c[outer_at(i, j, n, width)] += sum over the runs' positions of a[i] * b[j], for i < m, j < n.
template <typename T>
using OuterGemm = void (*)(int64_t m, int64_t n, const OuterRun<T>* runs, int64_t nruns,
                           int64_t a_step, int64_t b_step, T* c);

struct OuterKernels {
  OuterGemm<float> f32;
  OuterGemm<double> f64;
  int64_t width_f32, width_f64;  // elements along i per panel
};

OuterKernels outer_kernels_generic();
#if defined(FASTCNN_X86)
OuterKernels outer_kernels_avx2();
OuterKernels outer_kernels_avx512();
#endif

inline const OuterKernels& outer_kernels() {
  static const OuterKernels chosen = FASTCNN_FOR_CHOSEN_ISA(outer_kernels);
  return chosen;
}
template <typename T>
OuterGemm<T> outer_gemm_for();
template <>
inline OuterGemm<float> outer_gemm_for<float>() {
  return outer_kernels().f32;
}
template <>
inline OuterGemm<double> outer_gemm_for<double>() {
  return outer_kernels().f64;
}

// Output rows shorter than this leave runs too short between the restarts at the padding (C9,
// 7 wide: 0.8x of the blocked GEMM's speed, measured at 1 thread); they stay on the GEMM.
constexpr int64_t kOuterMinRow = 12;

// Filters and channels innermost in dY and X, channel runs long enough to fill a tile (the
// 3-channel stem stays on the dot-product path), and rows long enough.
inline bool outer_backward_weight_applies(const ConvGeom& g) {
  return g.xs[1] == 1 && g.ys[1] == 1 && g.Cg >= 8 && g.Wo >= kOuterMinRow;
}

// Output rows per block: the block's dY rows and the input rows under them fit this much of L2.
constexpr int64_t kOuterL2Bytes = 512 << 10;
// Fewest positions per block, though the block may then outgrow L2: each block passes once over
// all taps' tiles in the workspace (C7's are 2.4 MB); measured 2-4% faster on C7 and C11.
constexpr int64_t kOuterMinPositions = 512;
// Most output rows per block: a block's runs per tap sit in an array on the stack.
constexpr int64_t kOuterMaxRows = 64;

// Blocking and workspace of one call, computed identically for sizing and running.
struct OuterPlan {
  bool vec_filters = true;  // vectors along filters, channels broadcast (else the reverse)
  int64_t rows = 1;         // output rows (n, oh) per block
  int64_t splits = 1;       // slices of the output rows, one partial sum each
  int threads = 1;
  int64_t m = 0, n = 0;       // vector and broadcast extents: filters and channels or reverse
  int64_t width = 0;          // the kernel's panel width
  int64_t tile = 0;           // elements per tap's tile
  int64_t partial_elems = 0;  // per slice: G * R * S tiles
  int64_t total_elems() const { return splits * partial_elems; }
};

inline OuterPlan outer_plan(const ConvGeom& g, int64_t elem, int threads) {
  OuterPlan pl;
  // The vector axis: the one whose vectors waste fewer lanes, the longer one on a tie.
  const int64_t lanes = 64 / elem;
  auto waste = [&](int64_t n) { return round_up(n, lanes) * 1024 / n; };
  pl.vec_filters = waste(g.Kg) != waste(g.Cg) ? waste(g.Kg) < waste(g.Cg) : g.Kg >= g.Cg;
  const int64_t row_bytes = (g.Wo * g.Kg + g.sh * g.W * g.Cg) * elem;
  pl.rows =
      std::max(kOuterL2Bytes / std::max<int64_t>(row_bytes, 1), ceil_div(kOuterMinPositions, g.Wo));
  pl.rows = std::clamp<int64_t>(pl.rows, 1, kOuterMaxRows);
  pl.splits = std::max<int64_t>(1, std::min<int64_t>(threads, g.N * g.Ho));
  pl.threads = static_cast<int>(std::min<int64_t>(threads, pl.splits * g.G));
  pl.m = pl.vec_filters ? g.Kg : g.Cg, pl.n = pl.vec_filters ? g.Cg : g.Kg;
  pl.width = elem == 8 ? outer_kernels().width_f64 : outer_kernels().width_f32;
  pl.tile = round_up(pl.m, pl.width) * pl.n;
  pl.partial_elems = round_up(g.G * g.RS() * pl.tile, lanes);
  return pl;
}

// The convolution multiplies dY by the zero padding too: a filter whose dY is Inf or NaN at a
// position where tap (r, s) reads padding gets NaN there for every channel (Inf * 0), as a
// product over the padded input gives. The kernel skips those products, so they are set here
// from the block's positions that read padding under the tap, in the tap's tile c.
template <typename T>
void poison_padding(const ConvGeom& g, const OuterPlan& pl, const T* dyg, int64_t v0, int64_t v1,
                    int64_t dh_tap, ValidColumns cols, T* c) {
  constexpr int64_t kChunk = 256;  // filters checked at a time
  for (int64_t k0 = 0; k0 < g.Kg; k0 += kChunk) {
    const int64_t kn = std::min(kChunk, g.Kg - k0);
    T bad[kChunk] = {};  // sums of dy - dy: NaN where any is Inf or NaN
    auto scan = [&](int64_t nn, int64_t oh, int64_t ow0, int64_t ow1) {
      for (int64_t ow = ow0; ow < ow1; ++ow) {
        const T* d = dyg + nn * g.ys[0] + oh * g.ys[2] + ow * g.ys[3] + k0;
        for (int64_t kk = 0; kk < kn; ++kk) bad[kk] += d[kk] - d[kk];
      }
    };
    for (int64_t v = v0; v < v1; ++v) {
      const int64_t nn = v / g.Ho, oh = v % g.Ho;
      if (!in_range(oh * g.sh - g.ph + dh_tap, g.H)) {
        scan(nn, oh, 0, g.Wo);
      } else {
        scan(nn, oh, 0, cols.lo);
        scan(nn, oh, cols.hi, g.Wo);
      }
    }
    for (int64_t kk = 0; kk < kn; ++kk) {
      if (bad[kk] == T(0)) continue;
      const int64_t k = k0 + kk;
      for (int64_t ch = 0; ch < g.Cg; ++ch)
        c[pl.vec_filters ? outer_at(k, ch, pl.n, pl.width) : outer_at(ch, k, pl.n, pl.width)] =
            bad[kk] - bad[kk];
    }
  }
}

template <typename T>
void outer_backward_weight(const ConvGeom& g, const T* dy, const T* x, T* dw, const OuterPlan& pl,
                           T* ws) {
  const OuterGemm<T> gemm = outer_gemm_for<T>();
  const int64_t tile = pl.tile;
  const int64_t a_step = pl.vec_filters ? g.ys[3] : g.sw * g.xs[3];
  const int64_t b_step = pl.vec_filters ? g.sw * g.xs[3] : g.ys[3];
  const int64_t out_rows = g.N * g.Ho;
  // Tasks (split, group): a thread's tasks are whole slices.
  parallel_for(pl.splits * g.G, pl.threads, [&](int, int64_t begin, int64_t end) {
    OuterRun<T> runs[kOuterMaxRows];
    for (int64_t t = begin; t < end; ++t) {
      const int64_t split = t / g.G, grp = t % g.G;
      T* c = ws + split * pl.partial_elems + grp * g.RS() * tile;
      std::fill(c, c + g.RS() * tile, T(0));
      const T* dyg = dy + grp * g.Kg;
      const T* xg = x + grp * g.Cg;
      const int64_t v_end = (split + 1) * out_rows / pl.splits;
      for (int64_t v0 = split * out_rows / pl.splits; v0 < v_end; v0 += pl.rows) {
        const int64_t v1 = std::min(v_end, v0 + pl.rows);
        for (int64_t rs = 0; rs < g.RS(); ++rs) {
          const int64_t dh_tap = rs / g.S * g.dh, dw_tap = rs % g.S * g.dw;
          const ValidColumns cols = valid_columns(g, dw_tap, g.Wo);
          poison_padding(g, pl, dyg, v0, v1, dh_tap, cols, c + rs * tile);
          if (cols.lo >= cols.hi) continue;
          int64_t nruns = 0;
          for (int64_t v = v0; v < v1; ++v) {
            const int64_t nn = v / g.Ho, oh = v % g.Ho, ih = oh * g.sh - g.ph + dh_tap;
            if (!in_range(ih, g.H)) continue;
            const int64_t iw = cols.lo * g.sw - g.pw + dw_tap;
            const T* d = dyg + nn * g.ys[0] + oh * g.ys[2] + cols.lo * g.ys[3];
            const T* xp = xg + nn * g.xs[0] + ih * g.xs[2] + iw * g.xs[3];
            OuterRun<T> r{pl.vec_filters ? d : xp, pl.vec_filters ? xp : d, cols.hi - cols.lo};
            OuterRun<T>* last = nruns > 0 ? &runs[nruns - 1] : nullptr;
            // Rows that continue each other in memory (1x1, unpadded) form one run.
            if (last && last->a + last->len * a_step == r.a && last->b + last->len * b_step == r.b)
              last->len += r.len;
            else
              runs[nruns++] = r;
          }
          if (nruns > 0) gemm(pl.m, pl.n, runs, nruns, a_step, b_step, c + rs * tile);
        }
      }
    }
  });
  // dW from the partial sums, added in split order.
  parallel_for(g.K, pl.threads, [&](int, int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t grp = k / g.Kg, kk = k % g.Kg;
      for (int64_t rs = 0; rs < g.RS(); ++rs)
        for (int64_t ch = 0; ch < g.Cg; ++ch) {
          const int64_t at =
              (grp * g.RS() + rs) * tile + (pl.vec_filters ? outer_at(kk, ch, pl.n, pl.width)
                                                           : outer_at(ch, kk, pl.n, pl.width));
          T sum = ws[at];
          for (int64_t s = 1; s < pl.splits; ++s) sum += ws[s * pl.partial_elems + at];
          dw[k * g.ws[0] + filter_tap(g, ch, rs)] = sum;
        }
    }
  });
}

}  // namespace fastcnn::cpu
