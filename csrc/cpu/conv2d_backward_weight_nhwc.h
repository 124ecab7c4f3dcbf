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

// The kernels built for the same ISA as the micro-kernel in use (the plan needs their width).
inline const OuterKernels& outer_kernels() {
  static const OuterKernels chosen = FASTCNN_FOR_CHOSEN_ISA(outer_kernels);
  return chosen;
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
  if (panels % threads == 0 && panels >= 2 * int64_t{threads} && tiles_bytes >= kOuterPartsBytes)
    pl.parts = threads;
  else
    pl.splits = std::max<int64_t>(1, std::min<int64_t>(threads, g.N * g.Ho));
  pl.threads = static_cast<int>(std::min<int64_t>(threads, pl.splits * pl.parts * g.G));
  pl.tile = round_up(pl.m, pl.width) * pl.n;
  pl.partial_elems = round_up(g.G * g.RS() / pl.taps * pl.tile, lanes);
  return pl;
}

// Runs the pass planned by the plan above (conv2d_backward_weight_nhwc.cpp; float and double).
template <typename T>
void outer_backward_weight(const ConvGeom& g, const T* dy, const T* x, T* dw, const OuterPlan& pl,
                           T* ws);

}  // namespace fastcnn::cpu
