// Backward-weight over channels-innermost operands, read in place: for each filter tap (r, s),
//   dW[k, c, r, s] = sum over output positions p of dY[p, k] * X[pixel(p, r, s), c],
// a sum of outer products of dY's row of filters at p with X's row of channels under the tap.
// The kernel keeps a tile of filters x channels in registers across the positions of a block
// (vectors along one axis, the other broadcast), so neither operand is packed; a tap's padding
// is skipped by restricting each output row to the columns whose pixel lies inside the image.
// Blocks of output rows stay in L2 while every tap and tile passes over them. Threads take
// shares of the tiles' panels, or slices of the output rows whose partial sums in the workspace
// are added in a fixed order: results depend only on the thread count.
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

// c[outer_at(i, j, ldn, width)] += sum over the runs' positions of a[i] * b[j], for i < m,
// j < n (<= ldn).
template <typename T>
using OuterGemm = void (*)(int64_t m, int64_t n, const OuterRun<T>* runs, int64_t nruns,
                           int64_t a_step, int64_t b_step, T* c, int64_t ldn);

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
OuterGemm<T> outer_gemm_for() {
  return for_dtype<T>(outer_kernels());
}

// Output rows shorter than kOuterLongRow leave short runs between the restarts at the padding:
// they take this kernel only from kOuterMinRow wide and with kOuterShortRowPositions positions
// or more, below which the blocked GEMM is faster (C9, 7 wide, 392 positions: 11.2 ms here
// against its 9.6 ms; 64 images of 8x8 or 4x4 with 32 to 512 channels: 1.2-1.5x faster here).
constexpr int64_t kOuterLongRow = 12;
constexpr int64_t kOuterMinRow = 4;
constexpr int64_t kOuterShortRowPositions = 1024;

// Fewest elements in the kernel's broadcast run (channels, or (tap, channel) pairs when merged).
constexpr int64_t kOuterMinRun = 8;

// A tap row's broadcast operand as one run, for fewer channels than that (the stem): with
// vectors along filters, unit dilation along w and whole pixels of this group's channels,
// X[ih, iw + s, c] over (s, c) is one contiguous run of S * Cg elements, so the kernel broadcasts
// all of a filter row's taps at once (21 instead of 3 per vector load). With more channels,
// merging measured 1-3% slower (C4..D2).
inline bool outer_merges_taps(const ConvGeom& g, bool vec_filters) {
  return vec_filters && g.Cg < kOuterMinRun && g.dw == 1 && g.xs[3] == g.Cg && g.S > 1;
}

// The vector axis: the one whose vectors waste fewer lanes, the longer one on a tie.
inline bool outer_vec_filters(const ConvGeom& g, int64_t elem) {
  const int64_t lanes = 64 / elem;
  auto waste = [&](int64_t n) { return round_up(n, lanes) * 1024 / n; };
  return waste(g.Kg) != waste(g.Cg) ? waste(g.Kg) < waste(g.Cg) : g.Kg >= g.Cg;
}

// Filters and channels innermost in dY and X, rows long enough (or enough of them), and a
// broadcast run long enough to fill a tile.
inline bool outer_backward_weight_applies(const ConvGeom& g, int64_t elem) {
  const int64_t run = outer_merges_taps(g, outer_vec_filters(g, elem)) ? g.S * g.Cg : g.Cg;
  const bool rows =
      g.Wo >= kOuterLongRow || (g.Wo >= kOuterMinRow && g.N * g.P() >= kOuterShortRowPositions);
  return g.xs[1] == 1 && g.ys[1] == 1 && run >= kOuterMinRun && rows;
}

// Output rows per block: the block's dY rows and the input rows under them fit this much of L2.
constexpr int64_t kOuterL2Bytes = 512 << 10;
// Fewest positions per block, though the block may then outgrow L2: each block passes once over
// all taps' tiles in the workspace (C7's are 2.4 MB, C12's 1 MB).
constexpr int64_t kOuterMinPositions = 512;
// Tiles of at least this many bytes are split among the threads by panels (see outer_plan).
constexpr int64_t kOuterPartsBytes = 1 << 20;
// Most output rows per block: a block's runs per tap sit in an array on the stack.
constexpr int64_t kOuterMaxRows = 64;

// Blocking and workspace of one call, computed identically for sizing and running.
struct OuterPlan {
  bool vec_filters = true;  // vectors along filters, channels broadcast (else the reverse)
  int64_t taps = 1;         // taps (r, s) per tile: S when a filter row's taps merge, else 1
  int64_t rows = 1;         // output rows (n, oh) per block
  int64_t splits = 1;       // slices of the output rows, one partial sum each
  int64_t parts = 1;        // or slices of the vector axis, whole panels, written apart
  int threads = 1;
  int64_t m = 0, n = 0;       // tile extents: vectors along m, n broadcast (taps * Cg or Kg)
  int64_t width = 0;          // the kernel's panel width
  int64_t tile = 0;           // elements per tile
  int64_t partial_elems = 0;  // per slice: G * R * S / taps tiles
  int64_t total_elems() const { return splits * partial_elems; }
  // Where dW[k, c, rs] of a group lies in its partial sums.
  int64_t at(const ConvGeom& g, int64_t k, int64_t c, int64_t rs) const {
    const int64_t j = vec_filters ? rs % taps * g.Cg + c : k;
    return rs / taps * tile + outer_at(vec_filters ? k : c, j, n, width);
  }
};

inline OuterPlan outer_plan(const ConvGeom& g, int64_t elem, int threads) {
  OuterPlan pl;
  const int64_t lanes = 64 / elem;
  pl.vec_filters = outer_vec_filters(g, elem);
  pl.taps = outer_merges_taps(g, pl.vec_filters) ? g.S : 1;
  const int64_t row_bytes = (g.Wo * g.Kg + g.sh * g.W * g.Cg) * elem;
  pl.rows =
      std::max(kOuterL2Bytes / std::max<int64_t>(row_bytes, 1), ceil_div(kOuterMinPositions, g.Wo));
  pl.rows = std::clamp<int64_t>(pl.rows, 1, kOuterMaxRows);
  pl.m = pl.vec_filters ? g.Kg : g.Cg, pl.n = pl.vec_filters ? pl.taps * g.Cg : g.Kg;
  pl.width = elem == 8 ? outer_kernels().width_f64 : outer_kernels().width_f32;
  // Threads take equal shares of the panels when there are enough and the tiles are large, which
  // needs no partial sums (C7: 2 x 2.4 MB zeroed, written and added otherwise; 5 % of its CPU
  // time at two threads); else slices of the output rows (with small tiles, C11's 64 KB, each
  // thread would read all of the broadcast operand for nothing: 3 % more CPU time).
  const int64_t panels = ceil_div(pl.m, pl.width);
  const int64_t tiles_bytes = g.G * g.RS() / pl.taps * round_up(pl.m, pl.width) * pl.n * elem;
  if (panels % threads == 0 && panels >= 2 * threads && tiles_bytes >= kOuterPartsBytes)
    pl.parts = threads;
  else
    pl.splits = std::max<int64_t>(1, std::min<int64_t>(threads, g.N * g.Ho));
  pl.threads = static_cast<int>(std::min<int64_t>(threads, pl.splits * pl.parts * g.G));
  pl.tile = round_up(pl.m, pl.width) * pl.n;
  pl.partial_elems = round_up(g.G * g.RS() / pl.taps * pl.tile, lanes);
  return pl;
}

// The convolution multiplies dY by the zero padding too: a filter whose dY is Inf or NaN at a
// position where tap (r, s) reads padding gets NaN there for every channel (Inf * 0), as a
// product over the padded input gives. The kernel skips those products, so they are set here
// from the block's positions that read padding under the tap, in the group's partial sums c,
// for vector-axis elements [i0, i1) (filters or channels).
template <typename T>
void poison_padding(const ConvGeom& g, const OuterPlan& pl, const T* dyg, int64_t v0, int64_t v1,
                    int64_t rs, ValidColumns cols, int64_t i0, int64_t i1, T* c) {
  const int64_t dh_tap = rs / g.S * g.dh;
  const int64_t k_begin = pl.vec_filters ? i0 : 0, k_end = pl.vec_filters ? i1 : g.Kg;
  const int64_t c_begin = pl.vec_filters ? 0 : i0, c_end = pl.vec_filters ? g.Cg : i1;
  constexpr int64_t kChunk = 256;  // filters checked at a time
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kChunk) {
    const int64_t kn = std::min(kChunk, k_end - k0);
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
      for (int64_t ch = c_begin; ch < c_end; ++ch) c[pl.at(g, k, ch, rs)] = bad[kk] - bad[kk];
    }
  }
}

template <typename T>
void outer_backward_weight(const ConvGeom& g, const T* dy, const T* x, T* dw, const OuterPlan& pl,
                           T* ws) {
  const OuterGemm<T> gemm = outer_gemm_for<T>();
  const int64_t a_step = pl.vec_filters ? g.ys[3] : g.sw * g.xs[3];
  const int64_t b_step = pl.vec_filters ? g.sw * g.xs[3] : g.ys[3];
  const int64_t out_rows = g.N * g.Ho, group_elems = g.RS() / pl.taps * pl.tile;
  const int64_t panels = ceil_div(pl.m, pl.width);
  // Tasks (split, group, part): a thread's tasks are whole slices.
  parallel_for(pl.splits * g.G * pl.parts, pl.threads, [&](int, int64_t begin, int64_t end) {
    OuterRun<T> runs[kOuterMaxRows];
    for (int64_t t = begin; t < end; ++t) {
      const int64_t part = t % pl.parts, grp = t / pl.parts % g.G, split = t / pl.parts / g.G;
      // Vector-axis elements [i0, i1): the part's panels.
      const int64_t i0 = part * panels / pl.parts * pl.width,
                    i1 = std::min(pl.m, (part + 1) * panels / pl.parts * pl.width);
      T* c = ws + split * pl.partial_elems + grp * group_elems;
      for (int64_t q = 0; q < g.RS() / pl.taps; ++q)
        std::fill(c + q * pl.tile + i0 * pl.n, c + q * pl.tile + round_up(i1, pl.width) * pl.n,
                  T(0));
      const T* dyg = dy + grp * g.Kg;
      const T* xg = x + grp * g.Cg;
      const int64_t v_end = (split + 1) * out_rows / pl.splits;
      for (int64_t v0 = split * out_rows / pl.splits; v0 < v_end; v0 += pl.rows) {
        const int64_t v1 = std::min(v_end, v0 + pl.rows);
        // Output columns [ow0, ow1) of the block's rows under tap (r, s), into tile columns
        // [j0, j0 + nb) of the tile of tap r * S + s.
        auto pass = [&](int64_t r, int64_t s, int64_t ow0, int64_t ow1, int64_t j0, int64_t nb) {
          if (ow0 >= ow1) return;
          int64_t nruns = 0;
          for (int64_t v = v0; v < v1; ++v) {
            const int64_t nn = v / g.Ho, oh = v % g.Ho, ih = oh * g.sh - g.ph + r * g.dh;
            if (!in_range(ih, g.H)) continue;
            const int64_t iw = ow0 * g.sw - g.pw + s * g.dw;
            const T* d = dyg + nn * g.ys[0] + oh * g.ys[2] + ow0 * g.ys[3];
            const T* xp = xg + nn * g.xs[0] + ih * g.xs[2] + iw * g.xs[3];
            OuterRun<T> run{(pl.vec_filters ? d : xp) + i0, pl.vec_filters ? xp : d, ow1 - ow0};
            OuterRun<T>* last = nruns > 0 ? &runs[nruns - 1] : nullptr;
            // Rows that continue each other in memory (1x1, unpadded) form one run.
            if (last && last->a + last->len * a_step == run.a &&
                last->b + last->len * b_step == run.b)
              last->len += run.len;
            else
              runs[nruns++] = run;
          }
          T* tile = c + (r * g.S + s) / pl.taps * pl.tile + outer_at(i0, j0, pl.n, pl.width);
          if (nruns > 0) gemm(i1 - i0, nb, runs, nruns, a_step, b_step, tile, pl.n);
        };
        for (int64_t rs = 0; rs < g.RS(); ++rs)
          poison_padding(g, pl, dyg, v0, v1, rs, valid_columns(g, rs % g.S * g.dw, g.Wo), i0, i1,
                         c);
        for (int64_t r = 0; r < g.R; ++r) {
          if (pl.taps == 1) {
            for (int64_t s = 0; s < g.S; ++s) {
              const ValidColumns cols = valid_columns(g, s * g.dw, g.Wo);
              pass(r, s, cols.lo, cols.hi, 0, pl.n);
            }
            continue;
          }
          // Merged: the columns where every tap of the row reads the image in one pass, the
          // rest tap by tap.
          const int64_t lo = valid_columns(g, 0, g.Wo).lo;
          const int64_t hi = std::max(lo, valid_columns(g, (g.S - 1) * g.dw, g.Wo).hi);
          pass(r, 0, lo, hi, 0, pl.n);
          for (int64_t s = 0; s < g.S; ++s) {
            const ValidColumns cols = valid_columns(g, s * g.dw, g.Wo);
            pass(r, s, cols.lo, std::min(cols.hi, lo), s * g.Cg, g.Cg);
            pass(r, s, std::max(cols.lo, hi), cols.hi, s * g.Cg, g.Cg);
          }
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
          const int64_t at = grp * group_elems + pl.at(g, kk, ch, rs);
          T sum = ws[at];
          for (int64_t s = 1; s < pl.splits; ++s) sum += ws[s * pl.partial_elems + at];
          dw[k * g.ws[0] + filter_tap(g, ch, rs)] = sum;
        }
    }
  });
}

}  // namespace fastcnn::cpu
