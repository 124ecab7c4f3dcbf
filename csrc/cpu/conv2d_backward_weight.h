// Backward-weight (dense GEMM path) as dot products along output positions:
//   dW[k, (c, r, s)] = sum_q dY[k, q] * col[(c, r, s), q],   q = (n, p) over all images,
// where row (c, r, s) of col is image plane c shifted by the tap (r, s), zero in the padding.
// Per block of positions, dY's rows and col's rows are packed as plain row copies (runs along
// output rows, edges zeroed); the kernel then reduces along positions with vector
// accumulators, which needs no transposes and wastes nothing on few columns (a 1-channel 3x3
// has 9). Threads take slices of the positions and write partial sums to the workspace, added
// in a fixed order: results depend only on the thread count.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu/conv2d_geom.h"
#include "cpu/isa_select.h"
#include "cpu/parallel.h"
#include "fastcnn/ops.h"

namespace fastcnn::cpu {

// Packed rows are padded to this many bytes, a multiple of every ISA's vector.
constexpr int64_t kDotAlign = 64;
// Filters per pass of the kernel over all columns: their packed rows stay in L2.
constexpr int64_t kDotRowChunk = 64;

// c[i * ldc + j] += sum_(l < len) a[i * lda + l] * b[j][l] for i < m, j < n; len is a
// multiple of kDotAlign bytes of elements.
template <typename T>
using DotGemm = void (*)(int64_t m, int64_t n, int64_t len, const T* a, int64_t lda,
                         const T* const* b, T* c, int64_t ldc);

struct DotKernels {
  DotGemm<float> f32;
  DotGemm<double> f64;
};

DotKernels dot_kernels_generic();
#if defined(FASTCNN_X86)
DotKernels dot_kernels_avx2();
DotKernels dot_kernels_avx512();
#endif

// NCHW (positions contiguous along rows of the image and of dY), or channels-innermost with
// runs of channels too short for the packed GEMM to load well (the 3-channel stem, one
// channel), and enough positions per thread that the horizontal sums stay rare: with few
// the blocked GEMM over packed panels is faster (C9: 196 per thread, C12: 784 at two threads;
// on a Xeon with two FMA ports also C12 at one thread, 1568: 11.1 against 7.4 ms, and twice
// its batch, 3136: 20.1 against 15.8 ms; bench/NOTES.md, "Eighth session").
constexpr int64_t kDotMinPositions = 4096;
inline bool dot_backward_weight_applies(const ConvGeom& g, int threads) {
  const bool rows = g.xs[3] == 1 && g.ys[3] == 1;
  return (rows || g.Cg < 8) && g.N * g.P() >= kDotMinPositions * threads;
}

// Blocking and workspace of one call, computed identically for sizing and running.
//
// Stride 1 ("shifted"): positions run over each image's padded grid, Hp x Wp rows of the
// input padded by the convolution's padding, and dY is zero past its Ho x Wo corner. Row
// (c, r, s) of col is then the padded plane c itself, read from offset r * dh * Wp + s * dw:
// a block packs each channel's padded rows once instead of each (c, r, s) row apart.
struct DotPlan {
  int64_t cols = 0;       // (c, r, s) per group
  int64_t block = 0;      // positions per packed block, a multiple of kDotAlign bytes
  int64_t col_block = 0;  // columns per kernel call (and packed at a time when not shifted)
  int64_t splits = 1;     // slices of the positions, one partial sum each
  bool shifted = false;
  bool direct = false;  // 1x1, stride 1, unpadded: both operands read in place (see dot_plan)
  bool grad_in_place = false;        // dY read in place, col packed per block (see dot_plan)
  int64_t Hp = 0, Wp = 0, rows = 0;  // shifted: padded grid, its rows per block
  int64_t plane = 0;                 // shifted: elements per packed channel
  int threads = 1;
  int64_t a_elems = 0, b_elems = 0, partial_elems = 0;
  int64_t thread_elems() const { return a_elems + b_elems; }
  int64_t total_elems() const { return threads * thread_elems() + splits * partial_elems; }
};

// One row chunk of the packed dY block, and the columns in use, stay within this much of L2
// (1 MB); the shifted planes stream through (each serves its R * S columns in turn).
constexpr int64_t kDotL2Bytes = 640 << 10;
constexpr int64_t kDotColumns = 96;  // columns per kernel call
// Longest block row: longer blocks make the horizontal sums rarer (measured up to 16 KB).
constexpr int64_t kDotMaxRowBytes = 16384;

inline DotPlan dot_plan(const ConvGeom& g, int64_t elem, int threads) {
  DotPlan pl;
  const int64_t lanes = kDotAlign / elem, positions = g.N * g.P();
  pl.cols = g.Cg * g.RS();
  pl.col_block = std::min<int64_t>(pl.cols, kDotColumns);
  // A padded row ends in its end padding and the next begins with its begin padding, both
  // zero: a tap reading past a row's end wraps into the next row's leading zeros, so the two
  // share their zeros and a row takes W plus the larger padding (likewise an image's rows).
  // 8x8 images padded by 1: 9 x 9 instead of 10 x 10 grid positions per 64 outputs.
  const int64_t pad_h_end = g.Ho + (g.R - 1) * g.dh - g.H - g.ph;
  const int64_t pad_w_end = g.Wo + (g.S - 1) * g.dw - g.W - g.pw;
  pl.Hp = std::max(g.H + std::max(g.ph, pad_h_end), g.Ho);
  pl.Wp = std::max(g.W + std::max(g.pw, pad_w_end), g.Wo);
  // The padded grid costs its extra positions in every dot product: not worth it past 1.5x.
  pl.shifted = g.sh == 1 && g.sw == 1 && 2 * pl.Hp * pl.Wp <= 3 * g.P();
  // A 1x1, stride-1, unpadded convolution over NCHW rows: col is the image itself and the
  // positions of an image are one contiguous run in both operands, so blocks inside one image
  // of whole vectors need no packing at all (C11 would otherwise copy all of dY per call).
  pl.direct = g.RS() == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0 && g.Ho == g.H &&
              g.Wo == g.W && g.xs[3] == 1 && g.xs[2] == g.W && g.ys[3] == 1 && g.ys[2] == g.Wo &&
              g.P() % lanes == 0;
  // When col has no more rows than dY (one input channel, 3x3: 9 rows against 32 filters),
  // packing col per block costs less than the shifted form's copy of dY: dY's rows are read
  // in place, blocks inside one image of whole vectors.
  pl.grad_in_place =
      !pl.direct && g.ys[3] == 1 && g.ys[2] == g.Wo && g.P() % lanes == 0 && pl.cols <= g.Kg;
  pl.shifted = pl.shifted && !pl.direct && !pl.grad_in_place;
  const int64_t per_position = std::min(g.Kg, kDotRowChunk) + (pl.shifted ? 16 : pl.col_block);
  const int64_t fit = kDotL2Bytes / (per_position * elem) / lanes * lanes;
  pl.block = std::clamp<int64_t>(fit, 16 * lanes, kDotMaxRowBytes / elem);
  pl.block = std::min(pl.block, round_up(ceil_div(positions, threads), lanes));
  if (pl.shifted) {
    pl.rows = std::max<int64_t>(1, pl.block / pl.Wp);
    pl.block = std::max(pl.block, round_up(pl.rows * pl.Wp, lanes));
    pl.plane = round_up((pl.rows + (g.R - 1) * g.dh) * pl.Wp + (g.S - 1) * g.dw + lanes, lanes);
  }
  pl.splits = std::max<int64_t>(1, std::min<int64_t>(threads, ceil_div(positions, 4 * lanes)));
  pl.threads = static_cast<int>(std::min<int64_t>(threads, pl.splits * g.G));
  pl.a_elems = pl.direct || pl.grad_in_place ? 0 : round_up(g.Kg * pl.block, lanes);
  // Packed columns (also the fallback of a shifted block that holds Inf or NaN: pack_grid_planes).
  pl.b_elems = std::max(pl.col_block * pl.block, g.Cg * pl.plane);
  pl.partial_elems = round_up(g.G * g.Kg * pl.cols, lanes);
  return pl;
}

// Runs the pass planned by the plan above (conv2d_backward_weight.cpp; float and double).
template <typename T>
void dot_backward_weight(const ConvGeom& g, const T* dy, const T* x, T* dw, const DotPlan& pl,
                         T* ws);

}  // namespace fastcnn::cpu
