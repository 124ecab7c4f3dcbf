// Convolution on the CPU as implicit GEMM: see conv2d_packing.h for the operand mapping.
// Parallel over (image, group, column chunk[, row panels]) for forward and backward-input,
// over (group, column chunk[, reduction slice]) for backward-weight; reduction slices write
// partial sums to the workspace and are added in a fixed order, so results depend only on
// the thread count.
#include <algorithm>
#include <array>
#include <cstring>
#include <numeric>
#include <optional>
#include <type_traits>
#include <utility>

#include "cpu/checks.h"
#include "cpu/conv2d_backward_weight.h"
#include "cpu/conv2d_backward_weight_nhwc.h"
#include "cpu/conv2d_checks.h"
#include "cpu/conv2d_depthwise.h"
#include "cpu/conv2d_packing.h"
#include "cpu/conv2d_rows.h"
#include "cpu/conv2d_stem_winograd.h"
#include "cpu/conv2d_winograd.h"
#include "cpu/conv2d_winograd_backward_weight.h"
#include "cpu/parallel.h"
#include "fastcnn/ops.h"

namespace fastcnn {

int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad_total,
                      int64_t dilation) {
  const int64_t span = in + pad_total - dilation * (kernel - 1) - 1;
  return span < 0 ? 0 : span / stride + 1;
}

namespace cpu {
namespace {

ConvGeom validate(const ConvNames& nm, const TensorView& x, const TensorView& w,
                  const TensorView& y, const Conv2dParams& p) {
  using Named = std::pair<const char*, const TensorView*>;
  for (const Named& t : {Named{nm.image, &x}, Named{nm.weight, &w}, Named{nm.output, &y}})
    check_cpu_float(nm.op, t.first, *t.second);
  ConvGeom g{};
  g.xs = dense_strides_4d(nm.op, nm.image, x);
  g.ws = dense_strides_4d(nm.op, nm.weight, w);
  g.ys = dense_strides_4d(nm.op, nm.output, y);
  check_same_dtype(nm.op, nm.weight, w, x);
  check_same_dtype(nm.op, nm.output, y, x);
  check_conv_geometry(nm, x, w, y, p, g);
  return g;
}

// Backward-input of a stride-1 convolution is itself a forward convolution of dY: the
// filters flipped in space with K and C exchanged (per group), padding d * (R - 1) - pad on
// each side. It then runs on the forward kernels (Winograd included), faster than the
// scatter-add GEMM. The flip and exchange are only strides over the same weight memory. It
// applies when each group's exchange is a stride swap (one group, or one channel and one
// filter per group) and the forward has enough filters (input channels here) to fill a tile.
struct AsForward {
  ConvGeom g;
  int64_t weight_offset;  // element offset of the first filter tap the forward reads
};

std::optional<AsForward> backward_input_as_forward(const ConvGeom& g, const Conv2dParams& p) {
  const int64_t span_h = g.dh * (g.R - 1), span_w = g.dw * (g.S - 1);
  const bool fits = g.sh == 1 && g.sw == 1 && p.pad_begin[0] <= span_h && p.pad_end[0] <= span_h &&
                    p.pad_begin[1] <= span_w && p.pad_end[1] <= span_w;
  const bool depthwise = g.Cg == 1 && g.Kg == 1;
  if (!fits || !(depthwise || (g.G == 1 && g.C >= 8))) return std::nullopt;
  ConvGeom f = g;
  f.C = g.K, f.H = g.Ho, f.W = g.Wo, f.xs = g.ys;
  f.K = g.C, f.Ho = g.H, f.Wo = g.W, f.ys = g.xs;
  f.Cg = g.Kg, f.Kg = g.Cg;
  f.ph = span_h - g.ph, f.pw = span_w - g.pw;
  if (!depthwise) std::swap(f.ws[0], f.ws[1]);
  f.ws[2] = -g.ws[2], f.ws[3] = -g.ws[3];
  return AsForward{f, (g.R - 1) * g.ws[2] + (g.S - 1) * g.ws[3]};
}

// The forward form also multiplies the output gradient's zero padding by filter taps, terms
// the true gradient (and torch) does not have: an Inf or NaN tap would turn them into NaN. It
// runs only when every tap is finite or there is no padding to meet (1x1).
template <typename T>
bool all_finite(const T* p, int64_t n) {
  constexpr int kLanes = 16;  // independent sums, so the loop vectorizes
  T acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += p[i + j] - p[i + j];  // 0, or NaN for Inf/NaN
  for (; i < n; ++i) acc[0] += p[i] - p[i];
  T sum = T(0);
  for (const T a : acc) sum += a;
  return sum == T(0);
}

bool forward_form_exact(const ConvGeom& g, const TensorView& weight) {
  if (g.RS() == 1) return true;
  return weight.dtype == DType::Float64 ? all_finite(weight.ptr<double>(), weight.numel())
                                        : all_finite(weight.ptr<float>(), weight.numel());
}

// Work split and workspace layout, computed identically for sizing and for running.
struct Plan {
  int threads = 1;
  int64_t M = 0, Kred = 0, cols = 0;  // GEMM per task group: M x cols, reduction Kred
  int64_t col_chunk = 0, col_chunks = 0, units = 0;
  int64_t splits = 1;  // forward: row panels; backward-input: channels; weight: reduction
  int64_t tasks = 0;
  int64_t a_elems = 0, thread_elems = 0, partial_elems = 0;  // 64-byte multiples
  bool depthwise = false;      // one input channel and few filters per group: direct convolution
  bool row_windows = false;    // forward B read in place from staged row windows
  bool pixel_rows = false;     // NHWC: GEMM rows are positions, columns filters or (r, s, c)
  std::optional<DotPlan> dot;  // backward-weight as dot products along positions
  std::optional<OuterPlan> outer;  // backward-weight as outer products over NHWC rows
  // Winograd's weight gradient, the outer products its fallback for Inf and NaN
  std::optional<WinogradWeightPlan> winograd;
  int64_t total_elems() const { return a_elems + threads * thread_elems + partial_elems; }
};

// Output positions per task of the NHWC forward: its A panels (kRowChunk x kBlockK) stay in L2.
constexpr int64_t kRowChunk = 128;

int64_t aligned(int64_t elems, int64_t elem_size) {
  return round_up(elems, 64 / elem_size);
}

// Backward-input packs W^T per (group, channel split): rows (c, r, s) of the split's channels.
int64_t input_split_panel_elems(const ConvGeom& g, int64_t splits, int mr) {
  return round_up(ceil_div(g.Cg, splits) * g.RS(), mr) * g.Kg;
}

Plan make_plan(ConvPass pass, const ConvGeom& g, int mr, int nr, int64_t elem, int threads) {
  Plan pl;
  // With one input channel the GEMM's reduction is only R*S long, but enough filters per
  // group (D1: 32) still fill the micro-kernel's rows; fewer (depthwise) do better direct.
  if (g.Cg == 1 && g.Kg < mr) {
    pl.depthwise = true;
    pl.a_elems = aligned(depthwise_workspace_elems(g), elem);
    pl.threads = threads;
    return pl;
  }
  // Channels-innermost input and output, filters enough to fill most of a column panel and
  // channel runs long enough to pack well (not the 3-channel stem): positions become the
  // GEMM rows, so tiles are stored as NHWC rows of filters.
  if (pass == ConvPass::Forward && g.xs[1] == 1 && g.ys[1] == 1 && 2 * g.Kg >= nr && g.Cg >= 8) {
    pl.pixel_rows = true;
    pl.M = g.P(), pl.Kred = g.Cg * g.RS(), pl.cols = g.Kg;
    pl.units = g.N * g.G * ceil_div(g.P(), kRowChunk);
    pl.tasks = pl.units;
    pl.a_elems = aligned(g.G * round_up(g.Kg, nr) * pl.Kred, elem);
    pl.thread_elems = aligned(round_up(kRowChunk, mr) * kBlockK, elem);
    pl.threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, pl.tasks)));
    return pl;
  }
  // The same for backward-input over NHWC, when every thread gets whole images (a task
  // owns the pixels of dX its windows add into).
  if (pass == ConvPass::BackwardInput && g.xs[1] == 1 && g.ys[1] == 1 && g.Cg >= 8 &&
      g.N * g.G >= threads) {
    pl.pixel_rows = true;
    pl.M = g.P(), pl.Kred = g.Kg, pl.cols = g.RS() * g.Cg;
    pl.units = pl.tasks = g.N * g.G;
    pl.a_elems = aligned(g.G * round_up(pl.cols, nr) * pl.Kred, elem);
    pl.thread_elems = aligned(round_up(kRowChunk, mr) * kBlockK, elem);
    pl.threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, pl.tasks)));
    return pl;
  }
  // Backward-weight over channels-innermost rows: outer products read in place
  // (conv2d_backward_weight_nhwc.h).
  if (pass == ConvPass::BackwardWeight && outer_backward_weight_applies(g, elem)) {
    pl.outer = outer_plan(g, elem, threads);
    pl.a_elems = aligned(pl.outer->total_elems(), elem);
    if (winograd_backward_weight_applies(g, elem == sizeof(float))) {
      pl.winograd = winograd_weight_plan(g, threads);
      pl.a_elems = std::max(pl.a_elems, aligned(pl.winograd->total_elems(), elem));
    }
    pl.threads = threads;
    return pl;
  }
  // Backward-weight over NCHW rows, or channels-innermost ones the above leaves: dot products
  // along positions (conv2d_backward_weight.h).
  if (pass == ConvPass::BackwardWeight && dot_backward_weight_applies(g, threads)) {
    pl.dot = dot_plan(g, elem, threads);
    pl.a_elems = aligned(pl.dot->total_elems(), elem);
    pl.threads = threads;
    return pl;
  }
  if (pass == ConvPass::Forward) {
    pl.M = g.Kg, pl.Kred = g.Cg * g.RS(), pl.cols = g.P();
  } else if (pass == ConvPass::BackwardInput) {
    pl.M = g.Cg * g.RS(), pl.Kred = g.Kg, pl.cols = g.P();
  } else {
    pl.M = g.Kg, pl.Kred = g.N * g.P(), pl.cols = g.Cg * g.RS();
  }
  // Column chunks of (nearly) equal size, and, when tasks are few, as many chunks as make
  // the tasks divide evenly between the threads: the static partition then balances
  // (C5's weight gradient has 576 columns: 512 + 64 would leave one thread 8x the work).
  const int64_t outer = pass == ConvPass::Forward ? g.N * g.G : g.G;
  int64_t nchunks = ceil_div(pl.cols, kBlockN);
  if (pass != ConvPass::BackwardInput && outer * nchunks < 8 * int64_t{threads})
    nchunks = std::min(round_up(nchunks, threads / std::gcd<int64_t>(outer, threads)),
                       std::max<int64_t>(1, ceil_div(pl.cols, nr)));
  pl.col_chunk = round_up(ceil_div(pl.cols, nchunks), nr);
  pl.col_chunks = ceil_div(pl.cols, pl.col_chunk);
  const int64_t panels = ceil_div(pl.M, mr);
  const int64_t bbuf = aligned(kBlockK * pl.col_chunk, elem);
  if (pass == ConvPass::Forward) {
    // Tasks: (image, group, column chunk), split further by row panels when too few.
    pl.units = g.N * g.G * pl.col_chunks;
    if (pl.units > 0 && pl.units < threads)
      pl.splits = std::min(panels, ceil_div(threads, pl.units));
    pl.a_elems = aligned(g.G * panels * mr * pl.Kred, elem);
    pl.row_windows = row_windows_apply(g, nr, elem);
    pl.thread_elems = pl.row_windows ? aligned(row_windows_elems(g, pl.col_chunk), elem) : bbuf;
  } else if (pass == ConvPass::BackwardInput) {
    // Tasks: (image, group), split further by channels when too few; a task owns its pixels.
    pl.units = g.N * g.G;
    if (pl.units > 0 && pl.units < threads) pl.splits = std::min(g.Cg, ceil_div(threads, pl.units));
    pl.a_elems = aligned(g.G * pl.splits * input_split_panel_elems(g, pl.splits, mr), elem);
    pl.thread_elems = bbuf;
  } else {
    // Tasks: (group, column chunk), split further by reduction slices when too few.
    pl.units = g.G * pl.col_chunks;
    const int64_t uneven = threads / std::gcd<int64_t>(pl.units, threads);
    pl.splits = std::max<int64_t>(1, std::min(uneven, ceil_div(pl.Kred, kBlockK)));
    pl.thread_elems = aligned(panels * mr * kBlockK, elem) + bbuf;
    pl.partial_elems = pl.splits > 1 ? aligned(pl.splits * g.G * g.Kg * pl.cols, elem) : 0;
  }
  pl.tasks = pl.units * pl.splits;
  pl.threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, pl.tasks)));
  return pl;
}

template <typename T>
Plan plan_for(ConvPass pass, const ConvGeom& g, int threads) {
  const MicroKernel<T>& mk = microkernel<T>();
  return make_plan(pass, g, mk.mr, mk.nr, sizeof(T), threads);
}

Plan plan_for(ConvPass pass, const ConvGeom& g, DType dtype, int threads) {
  return dtype == DType::Float64 ? plan_for<double>(pass, g, threads)
                                 : plan_for<float>(pass, g, threads);
}

// Where tap j lies within a filter, taps ordered (c, r, s) (NCHW packing) or (r, s, c)
// (NHWC packing).
int64_t tap_crs(const ConvGeom& g, int64_t j) {
  return filter_tap(g, j / g.RS(), j % g.RS());
}
int64_t tap_rsc(const ConvGeom& g, int64_t j) {
  return filter_tap(g, j % g.Cg, j / g.Cg);
}

// The weights of every group packed by pack_a_full (rows [0, M), reduction [0, K), panels of
// `panel` rows; group grp at ws + grp * group_elems), the panels shared among the threads.
template <typename T, typename RowOff, typename ColOff>
void pack_groups(const ConvGeom& g, int threads, int64_t M, int64_t K, int panel, const T* w,
                 const RowOff& row_off, const ColOff& col_off, T* ws, int64_t group_elems) {
  const int64_t panels = ceil_div(M, panel);
  parallel_for(g.G * panels, threads, [&](int, int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int64_t grp = u / panels, m0 = u % panels * panel;
      pack_a_full<T>(
          std::min<int64_t>(panel, M - m0), K, panel, w + grp * g.Kg * g.ws[0],
          [&](int64_t m) { return row_off(m0 + m); }, col_off, ws + grp * group_elems + m0 * K);
    }
  });
}

// Forward over NHWC: out[p, k] = sum_(r,s,c) X[ih(p, r), iw(p, s), c] * W[k, c, r, s], with
// the weights packed once as B panels of nr filters and the image packed per task.
template <typename T>
void forward_pixel_rows(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, bool relu,
                        const Plan& pl, T* ws) {
  const MicroKernel<T>& mk = microkernel<T>();
  const int64_t group_elems = round_up(g.Kg, mk.nr) * pl.Kred;
  pack_groups<T>(
      g, pl.threads, g.Kg, pl.Kred, mk.nr, w, [&](int64_t k) { return k * g.ws[0]; },
      [&](int64_t j) { return tap_rsc(g, j); }, ws, group_elems);
  const int64_t chunks = ceil_div(g.P(), kRowChunk);
  // A 1x1, stride-1, unpadded convolution over a dense NHWC image: position p is pixel p, so
  // A's rows are the image's pixels, read in place instead of packed (C11's input gradient
  // spent a third of its time packing dY).
  const bool pixels_are_rows = positions_are_flat(g);
  parallel_for(pl.tasks, pl.threads, [&](int tid, int64_t begin, int64_t end) {
    T* abuf = ws + pl.a_elems + tid * pl.thread_elems;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t chunk = t % chunks, grp = t / chunks % g.G, n = t / chunks / g.G;
      const int64_t p0 = chunk * kRowChunk, rows = std::min(kRowChunk, g.P() - p0);
      const T* b = ws + grp * group_elems;
      auto pack_b = [&](int64_t k0, int64_t, T*) {
        return Panels<T>{b + k0 * mk.nr, mk.nr * pl.Kred};
      };
      StoreTile<T> store{mk,      y + n * g.ys[0] + grp * g.Kg * g.ys[1] + p0 * g.ys[3],
                         g.ys[3], bias ? bias + grp * g.Kg : nullptr,
                         relu,    true};
      const T* xg = x + n * g.xs[0] + grp * g.Cg * g.xs[1];
      if (pixels_are_rows) {
        store.a_row_stride = g.xs[3];
        auto rows_a = [&](int64_t k0, int64_t) {
          return Panels<T>{xg + p0 * g.xs[3] + k0, mk.mr * g.xs[3]};
        };
        gemm_blocked<T>(mk, rows, g.Kg, 0, pl.Kred, 0, ceil_div(rows, mk.mr), rows_a, pack_b,
                        nullptr, store);
      } else {
        gemm_blocked<T>(mk, rows, g.Kg, 0, pl.Kred, 0, ceil_div(rows, mk.mr),
                        PackPixelRows<T>{g, xg, p0, rows, mk.mr, abuf}, pack_b, nullptr, store);
      }
    }
  });
}

template <typename T>
void forward(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, bool relu,
             const Plan& pl, T* ws) {
  if (pl.depthwise) return depthwise_forward(g, x, w, bias, y, relu, ws, pl.threads);
  if (pl.pixel_rows) return forward_pixel_rows(g, x, w, bias, y, relu, pl, ws);
  const MicroKernel<T>& mk = microkernel<T>();
  const int64_t panels = ceil_div(pl.M, mk.mr), group_elems = panels * mk.mr * pl.Kred;
  pack_groups<T>(
      g, pl.threads, pl.M, pl.Kred, mk.mr, w, [&](int64_t m) { return m * g.ws[0]; },
      [&](int64_t j) { return pl.row_windows ? row_windows_tap(g, j) : tap_crs(g, j); }, ws,
      group_elems);
  parallel_for(pl.tasks, pl.threads, [&](int tid, int64_t begin, int64_t end) {
    T* bbuf = ws + pl.a_elems + tid * pl.thread_elems;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t split = t % pl.splits, unit = t / pl.splits;
      const int64_t chunk = unit % pl.col_chunks, grp = unit / pl.col_chunks % g.G,
                    n = unit / pl.col_chunks / g.G;
      const int64_t p0 = chunk * pl.col_chunk, ncols = std::min(pl.col_chunk, pl.cols - p0);
      const T* a = ws + grp * group_elems;
      auto pack_a = [&](int64_t k0, int64_t) { return Panels<T>{a + k0 * mk.mr, mk.mr * pl.Kred}; };
      const ImageColumns<T> cols{g, x + n * g.xs[0] + grp * g.Cg * g.xs[1], p0, ncols, mk.nr};
      T* y0 = y + n * g.ys[0] + grp * g.Kg * g.ys[1] + p0 * g.ys[3];
      const T* bias_g = bias ? bias + grp * g.Kg : nullptr;
      const int64_t panel_begin = split * panels / pl.splits,
                    panel_end = (split + 1) * panels / pl.splits;
      // Outputs are NCHW or NHWC (the binding allocates them): NHWC tiles land transposed.
      auto run = [&](const auto& pack_b) {
        gemm_blocked<T>(mk, pl.M, ncols, 0, pl.Kred, panel_begin, panel_end, pack_a, pack_b, bbuf,
                        StoreTile<T>{mk, y0, g.ys[1], bias_g, relu, false, g.ys[3]});
      };
      if (pl.row_windows) {
        const PackRowWindows<T> windows{cols, bbuf};
        windows.stage_rows();
        run(windows);
      } else {
        run(PackImageColumns<T>{cols});
      }
    }
  });
}

// Backward-input over NHWC: dcol[p, (r, s, c)] = sum_k dY[p, k] * W[k, c, r, s], with W
// packed once as B panels of nr columns (r, s, c), and each tile added into dX pixel by pixel.
template <typename T>
void backward_input_pixel_rows(const ConvGeom& g, const T* dy, const T* w, T* dx, const Plan& pl,
                               T* ws) {
  const MicroKernel<T>& mk = microkernel<T>();
  const int64_t group_elems = round_up(pl.cols, mk.nr) * pl.Kred;
  pack_groups<T>(
      g, pl.threads, pl.cols, pl.Kred, mk.nr, w, [&](int64_t j) { return tap_rsc(g, j); },
      [&](int64_t k) { return k * g.ws[0]; }, ws, group_elems);
  parallel_for(pl.tasks, pl.threads, [&](int tid, int64_t begin, int64_t end) {
    T* abuf = ws + pl.a_elems + tid * pl.thread_elems;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t grp = t % g.G, n = t / g.G;
      T* dxg = dx + n * g.xs[0] + grp * g.Cg * g.xs[1];
      for (int64_t i = 0; i < g.H * g.W; ++i) fill_zero(dxg + i * g.xs[3], g.xs[1], g.Cg);
      const T* b = ws + grp * group_elems;
      auto pack_b = [&](int64_t k0, int64_t, T*) {
        return Panels<T>{b + k0 * mk.nr, mk.nr * pl.Kred};
      };
      for (int64_t p0 = 0; p0 < g.P(); p0 += kRowChunk) {
        const int64_t rows = std::min(kRowChunk, g.P() - p0);
        gemm_blocked<T>(mk, rows, pl.cols, 0, pl.Kred, 0, ceil_div(rows, mk.mr),
                        PackGradOutputPixelRows<T>{g, dy + n * g.ys[0] + grp * g.Kg * g.ys[1], p0,
                                                   rows, mk.mr, abuf},
                        pack_b, nullptr, ScatterPixelTile<T>{g, dxg, p0, mk});
      }
    }
  });
}

template <typename T>
void backward_input(const ConvGeom& g, const T* dy, const T* w, T* dx, const Plan& pl, T* ws) {
  if (pl.depthwise) return depthwise_backward_input(g, dy, w, dx, ws, pl.threads);
  if (pl.pixel_rows) return backward_input_pixel_rows(g, dy, w, dx, pl, ws);
  const MicroKernel<T>& mk = microkernel<T>();
  const int64_t slot = input_split_panel_elems(g, pl.splits, mk.mr);
  auto first_channel = [&](int64_t split) { return split * g.Cg / pl.splits; };
  parallel_for(g.G * pl.splits, pl.threads, [&](int, int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int64_t grp = u / pl.splits, c0 = first_channel(u % pl.splits);
      const int64_t rows = (first_channel(u % pl.splits + 1) - c0) * g.RS();
      pack_a_full<T>(
          rows, g.Kg, mk.mr, w + grp * g.Kg * g.ws[0],
          [&](int64_t m) { return tap_crs(g, c0 * g.RS() + m); },
          [&](int64_t k) { return k * g.ws[0]; }, ws + u * slot);
    }
  });
  // In a 1x1, stride-1, unpadded convolution over NCHW rows the columns (c, p) of dcol are
  // the pixels of dX themselves: tiles land there directly, with no zeroing or scatter.
  const bool direct = positions_are_flat(g) && g.xs[3] == 1;
  parallel_for(pl.tasks, pl.threads, [&](int tid, int64_t begin, int64_t end) {
    T* bbuf = ws + pl.a_elems + tid * pl.thread_elems;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t split = t % pl.splits, unit = t / pl.splits;
      const int64_t grp = unit % g.G, n = unit / g.G;
      const int64_t c0 = first_channel(split), c1 = first_channel(split + 1);
      const int64_t rows = (c1 - c0) * g.RS();
      T* dxg = dx + n * g.xs[0] + grp * g.Cg * g.xs[1];
      for (int64_t c = c0; c < c1 && !direct; ++c)
        for (int64_t i = 0; i < g.H * g.W; ++i) dxg[c * g.xs[1] + i * g.xs[3]] = T(0);
      const T* a = ws + (grp * pl.splits + split) * slot;
      auto pack_a = [&](int64_t k0, int64_t) { return Panels<T>{a + k0 * mk.mr, mk.mr * g.Kg}; };
      for (int64_t p0 = 0; p0 < pl.cols; p0 += pl.col_chunk) {
        const int64_t ncols = std::min(pl.col_chunk, pl.cols - p0);
        PackGradOutputColumns<T> pack_b{g, dy + n * g.ys[0] + grp * g.Kg * g.ys[1], p0, ncols,
                                        mk.nr};
        const int64_t panels = ceil_div(rows, mk.mr);
        if (direct)
          gemm_blocked<T>(mk, rows, ncols, 0, g.Kg, 0, panels, pack_a, pack_b, bbuf,
                          StoreTile<T>{mk, dxg + c0 * g.xs[1] + p0, g.xs[1], nullptr, false});
        else
          gemm_blocked<T>(mk, rows, ncols, 0, g.Kg, 0, panels, pack_a, pack_b, bbuf,
                          ScatterTile<T>{g, dxg, c0 * g.RS(), p0, mk});
      }
    }
  });
}

// Where column j of the weight-gradient GEMM lives within a filter of the weight tensor.
int64_t weight_offset(const ConvGeom& g, int64_t j) {
  const WeightColumn wc = weight_column(g, j);
  return filter_tap(g, wc.c, wc.rs);
}

template <typename T>
void backward_weight(const ConvGeom& g, const T* dy, const T* x, T* dw, const Plan& pl, T* ws) {
  if (pl.depthwise) return depthwise_backward_weight(g, dy, x, dw, ws, pl.threads);
  if (pl.dot) return dot_backward_weight(g, dy, x, dw, *pl.dot, ws);
  if constexpr (std::is_same_v<T, float>)
    if (pl.winograd && winograd_backward_weight(*pl.winograd, dy, x, dw, ws)) return;
  if (pl.outer) return outer_backward_weight(g, dy, x, dw, *pl.outer, ws);
  const MicroKernel<T>& mk = microkernel<T>();
  T* partial = ws + pl.threads * pl.thread_elems;
  const int64_t group_elems = g.Kg * pl.cols;
  parallel_for(pl.tasks, pl.threads, [&](int tid, int64_t begin, int64_t end) {
    T* abuf = ws + tid * pl.thread_elems;
    T* bbuf = abuf + aligned(ceil_div(pl.M, mk.mr) * mk.mr * kBlockK, sizeof(T));
    int64_t col_off[kBlockN];
    for (int64_t t = begin; t < end; ++t) {
      const int64_t split = t % pl.splits, unit = t / pl.splits;
      const int64_t chunk = unit % pl.col_chunks, grp = unit / pl.col_chunks;
      const int64_t j0 = chunk * pl.col_chunk, ncols = std::min(pl.col_chunk, pl.cols - j0);
      const T* dyg = dy + grp * g.Kg * g.ys[1];
      const T* xg = x + grp * g.Cg * g.xs[1];
      T* base;
      int64_t row_stride;
      bool adjacent = true;  // columns adjacent in memory: stores from registers
      if (pl.splits > 1) {
        base = partial + (split * g.G + grp) * group_elems + j0;
        row_stride = pl.cols;
      } else {
        base = dw + grp * g.Kg * g.ws[0];
        row_stride = g.ws[0];
        for (int64_t jj = 0; jj < ncols; ++jj) {
          col_off[jj] = weight_offset(g, j0 + jj);
          adjacent = adjacent && col_off[jj] == j0 + jj;
        }
        if (adjacent) base += j0;
      }
      const int64_t k_begin = split * pl.Kred / pl.splits,
                    k_end = (split + 1) * pl.Kred / pl.splits;
      PackGradOutputRows<T> pack_a{g, dyg, mk.mr, abuf};
      PackImageRows<T> pack_b{g, xg, j0, ncols, mk.nr};
      if (adjacent)
        gemm_blocked<T>(mk, pl.M, ncols, k_begin, k_end, 0, ceil_div(pl.M, mk.mr), pack_a, pack_b,
                        bbuf, StoreTile<T>{mk, base, row_stride, nullptr, false});
      else
        gemm_blocked<T>(mk, pl.M, ncols, k_begin, k_end, 0, ceil_div(pl.M, mk.mr), pack_a, pack_b,
                        bbuf, ScatterStoreTile<T>{mk, base, row_stride, col_off});
    }
  });
  if (pl.splits == 1) return;
  parallel_for(g.K, pl.threads, [&](int, int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      for (int64_t j = 0; j < pl.cols; ++j) {
        T sum = T(0);
        for (int64_t s = 0; s < pl.splits; ++s)
          sum += partial[s * g.G * group_elems + k * pl.cols + j];
        dw[k * g.ws[0] + weight_offset(g, j)] = sum;
      }
    }
  });
}

void zero(const TensorView& t) {
  if (t.numel() > 0) std::memset(t.data, 0, t.numel() * dtype_size(t.dtype));
}

// The forward kernels over geometry g: Winograd where it applies, the rows path for stems,
// else the GEMM or depthwise plan. Chosen once per call, the same for sizing and running.
struct ForwardRoute {
  enum Kind { kWinograd, kStem, kRows, kPlan } kind = kPlan;
  WinogradPlan winograd;
  Plan plan;
  size_t bytes = 0;  // workspace
};

ForwardRoute forward_route(const ConvGeom& g, DType dtype, int threads) {
  const bool f32 = dtype == DType::Float32;
  ForwardRoute r;
  if (winograd_applies(g, f32)) {
    r.kind = ForwardRoute::kWinograd;
    r.winograd = winograd_plan(g, threads);
    r.bytes = r.winograd.total_elems() * sizeof(float);
  } else if (stem_winograd_applies(g, f32)) {
    r.kind = ForwardRoute::kStem;
    r.bytes = stem_winograd_workspace_elems(g, threads) * sizeof(float);
  } else if (rows_applies(g, f32)) {
    r.kind = ForwardRoute::kRows;
    r.bytes = rows_workspace_elems(g, threads) * sizeof(float);
  } else {
    r.plan = plan_for(ConvPass::Forward, g, dtype, threads);
    r.bytes = r.plan.total_elems() * dtype_size(dtype);
  }
  return r;
}

void run_forward(const char* op, const ConvGeom& g, DType dtype, const void* x, const void* w,
                 const void* bias, void* y, bool relu, void* workspace, size_t workspace_bytes,
                 int threads) {
  const ForwardRoute r = forward_route(g, dtype, threads);
  check_workspace(op, workspace, workspace_bytes, r.bytes);
  if (g.N * g.K * g.Ho * g.Wo == 0) return;
  if (r.kind == ForwardRoute::kWinograd)
    return winograd_forward(r.winograd, static_cast<const float*>(x), static_cast<const float*>(w),
                            static_cast<const float*>(bias), static_cast<float*>(y), relu,
                            static_cast<float*>(workspace));
  if (r.kind == ForwardRoute::kStem)
    return stem_winograd_forward(g, static_cast<const float*>(x), static_cast<const float*>(w),
                                 static_cast<const float*>(bias), static_cast<float*>(y), relu,
                                 static_cast<float*>(workspace), threads);
  if (r.kind == ForwardRoute::kRows)
    return rows_forward(g, static_cast<const float*>(x), static_cast<const float*>(w),
                        static_cast<const float*>(bias), static_cast<float*>(y), relu,
                        static_cast<float*>(workspace), threads);
  auto run = [&](auto* ws) {
    using T = std::remove_pointer_t<decltype(ws)>;
    forward<T>(g, static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(bias),
               static_cast<T*>(y), relu, r.plan, ws);
  };
  if (dtype == DType::Float64)
    run(static_cast<double*>(workspace));
  else
    run(static_cast<float*>(workspace));
}

// Backward-input of a strided convolution, phase by phase: the pixels of dX at rows
// a + sh * i and columns b + sw * j receive only the taps r = (a + ph) mod sh + sh * t (and
// likewise s), so each phase is a stride-1 forward convolution of dY with that sub-filter,
// flipped, K and C exchanged (strides over the same weight memory, as for stride 1). The
// phases run on the forward kernels into the workspace, one dense tensor each in dX's memory
// format, and are then interleaved into dX; a phase no tap reaches is zero. This replaces the
// scatter-add of a GEMM's columns into dX. It applies to one group, no dilation, strides up
// to kMaxPhaseStride, and enough input channels (the forward's filters) to fill a tile.
constexpr int64_t kMaxPhaseStride = 4;
struct PhaseAxis {
  int64_t taps = 0;   // sub-filter length: 0 when no tap reaches the phase
  int64_t first = 0;  // its first tap in the filter
  int64_t pad = 0;    // the forward's padding before dY's first element
  int64_t skip = 0;   // dY elements the forward skips (a padding below zero)
  int64_t out = 0;    // the phase's pixels along this axis
};

PhaseAxis phase_axis(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t pad,
                     int64_t phase) {
  PhaseAxis ax;
  ax.out = phase < in ? (in - phase + stride - 1) / stride : 0;
  ax.first = (phase + pad) % stride;
  if (ax.first >= kernel) return ax;
  ax.taps = (kernel - ax.first + stride - 1) / stride;
  // Phase pixel i reads dY at i + q - t for tap t (q = (phase + pad - first) / stride): with
  // the taps flipped, a forward convolution padded by taps - 1 - q.
  ax.pad = ax.taps - 1 - (phase + pad - ax.first) / stride;
  if (ax.pad < 0) ax.skip = -ax.pad, ax.pad = 0;
  if (ax.skip >= out) ax.taps = 0;  // every dY element it would read lies past the end
  return ax;
}

bool phases_apply(const ConvGeom& g) {
  return (g.sh > 1 || g.sw > 1) && g.sh <= kMaxPhaseStride && g.sw <= kMaxPhaseStride &&
         g.dh == 1 && g.dw == 1 && g.G == 1 && g.C >= 8;
}

// Phase (a, b): its geometry and where its buffer starts in the workspace.
struct Phase {
  PhaseAxis h, w;
  ConvGeom f;  // the forward over dY into the phase's buffer
  int64_t weight_offset = 0, input_offset = 0, buffer_offset = 0;
  bool empty() const { return h.taps == 0 || w.taps == 0 || h.out == 0 || w.out == 0; }
};

Phase phase_at(const ConvGeom& g, int64_t a, int64_t b, int64_t buffer_offset) {
  Phase ph;
  ph.h = phase_axis(g.H, g.Ho, g.R, g.sh, g.ph, a);
  ph.w = phase_axis(g.W, g.Wo, g.S, g.sw, g.pw, b);
  ph.buffer_offset = buffer_offset;
  ConvGeom& f = ph.f;
  f = g;
  f.C = f.Cg = g.K, f.H = g.Ho - ph.h.skip, f.W = g.Wo - ph.w.skip, f.xs = g.ys;
  f.K = f.Kg = g.C, f.Ho = ph.h.out, f.Wo = ph.w.out;
  f.R = ph.h.taps, f.S = ph.w.taps, f.sh = f.sw = 1, f.ph = ph.h.pad, f.pw = ph.w.pad;
  f.ws = {g.ws[1], g.ws[0], -g.sh * g.ws[2], -g.sw * g.ws[3]};
  const int64_t plane = f.Ho * f.Wo;
  f.ys = g.xs[1] == 1 ? std::array<int64_t, 4>{plane * f.K, 1, f.Wo * f.K, f.K}  // as dX
                      : std::array<int64_t, 4>{plane * f.K, plane, f.Wo, 1};
  ph.weight_offset =
      (ph.h.first + g.sh * (f.R - 1)) * g.ws[2] + (ph.w.first + g.sw * (f.S - 1)) * g.ws[3];
  ph.input_offset = ph.h.skip * g.ys[2] + ph.w.skip * g.ys[3];
  return ph;
}

// Calls f(phase) for every phase, buffers laid out one after the other.
template <typename F>
int64_t for_each_phase(const ConvGeom& g, int64_t elem, const F& f) {
  int64_t offset = 0;
  for (int64_t a = 0; a < g.sh; ++a)
    for (int64_t b = 0; b < g.sw; ++b) {
      const Phase ph = phase_at(g, a, b, offset);
      f(ph);
      offset += aligned(g.N * g.C * ph.h.out * ph.w.out, elem);
    }
  return offset;
}

size_t phases_workspace_bytes(const ConvGeom& g, DType dtype, int threads) {
  const int64_t elem = dtype_size(dtype);
  size_t forward = 0;
  const int64_t buffers = for_each_phase(g, elem, [&](const Phase& ph) {
    if (!ph.empty()) forward = std::max(forward, forward_route(ph.f, dtype, threads).bytes);
  });
  return buffers * elem + forward;
}

// Row ih of image n of dX from the phase buffers (zeros where no tap reaches).
template <typename T>
void interleave_row(const ConvGeom& g, const T* ws, const Phase* phases, int64_t n, int64_t ih,
                    T* dx) {
  const int64_t a = ih % g.sh, i = ih / g.sh;
  T* row = dx + n * g.xs[0] + ih * g.xs[2];
  for (int64_t b = 0; b < g.sw && b < g.W; ++b) {
    const Phase& ph = phases[a * g.sw + b];
    const int64_t cols = ph.w.out;
    if (ph.empty()) {
      for (int64_t j = 0; j < cols; ++j)
        for (int64_t c = 0; c < g.C; ++c) row[c * g.xs[1] + (b + g.sw * j) * g.xs[3]] = T(0);
      continue;
    }
    const T* src = ws + ph.buffer_offset + n * ph.f.ys[0] + i * ph.f.ys[2];
    if (g.xs[1] == 1) {  // channels_last: pixels of C channels
      for (int64_t j = 0; j < cols; ++j)
        std::copy_n(src + j * ph.f.ys[3], g.C, row + (b + g.sw * j) * g.xs[3]);
    } else {
      for (int64_t c = 0; c < g.C; ++c)
        for (int64_t j = 0; j < cols; ++j)
          row[c * g.xs[1] + b + g.sw * j] = src[c * ph.f.ys[1] + j];
    }
  }
}

template <typename T>
void interleave_phases(const ConvGeom& g, const T* ws, const Phase* phases, T* dx, int threads) {
  parallel_for(g.N * g.H, threads_for(g.N * g.C * g.H * g.W, 1 << 15, threads),
               [&](int, int64_t begin, int64_t end) {
                 for (int64_t t = begin; t < end; ++t)
                   interleave_row(g, ws, phases, t / g.H, t % g.H, dx);
               });
}

void backward_input_by_phases(const ConvGeom& g, DType dtype, const void* dy, const void* w,
                              void* dx, void* workspace, size_t workspace_bytes, int threads) {
  const int64_t elem = dtype_size(dtype);
  std::array<Phase, kMaxPhaseStride * kMaxPhaseStride> phases;
  int count = 0;
  const int64_t buffers = for_each_phase(g, elem, [&](const Phase& ph) { phases[count++] = ph; });
  char* forward_ws = static_cast<char*>(workspace) + buffers * elem;
  const size_t forward_bytes = workspace_bytes - buffers * elem;
  for (int i = 0; i < count; ++i) {
    const Phase& ph = phases[i];
    if (ph.empty()) continue;
    run_forward(kConvBackwardInput.op, ph.f, dtype,
                static_cast<const char*>(dy) + ph.input_offset * elem,
                static_cast<const char*>(w) + ph.weight_offset * elem, nullptr,
                static_cast<char*>(workspace) + ph.buffer_offset * elem, false, forward_ws,
                forward_bytes, threads);
  }
  if (dtype == DType::Float64)
    interleave_phases(g, static_cast<const double*>(workspace), phases.data(),
                      static_cast<double*>(dx), threads);
  else
    interleave_phases(g, static_cast<const float*>(workspace), phases.data(),
                      static_cast<float*>(dx), threads);
}

}  // namespace

size_t conv2d_workspace_bytes(ConvPass pass, const TensorView& input, const TensorView& weight,
                              const TensorView& output, const Conv2dParams& p, int threads) {
  const ConvNames& nm = conv_names(pass);
  check_threads(nm.op, threads);
  const ConvGeom g = validate(nm, input, weight, output, p);
  if (pass == ConvPass::Forward) return forward_route(g, input.dtype, threads).bytes;
  const size_t plan_bytes =
      plan_for(pass, g, input.dtype, threads).total_elems() * dtype_size(input.dtype);
  if (pass == ConvPass::BackwardInput) {
    if (const auto as_forward = backward_input_as_forward(g, p))  // either form may run
      return std::max(plan_bytes, forward_route(as_forward->g, input.dtype, threads).bytes);
    if (phases_apply(g))
      return std::max(plan_bytes, phases_workspace_bytes(g, input.dtype, threads));
  }
  return plan_bytes;
}

void conv2d_forward(const TensorView& input, const TensorView& weight, const TensorView* bias,
                    const TensorView& output, const Conv2dParams& p, void* workspace,
                    size_t workspace_bytes, int threads) {
  check_threads(kConvForward.op, threads);
  const ConvGeom g = validate(kConvForward, input, weight, output, p);
  if (bias) {
    check_cpu_float(kConvForward.op, "bias", *bias);
    check_same_dtype(kConvForward.op, "bias", *bias, input);
    check_contiguous(kConvForward.op, "bias", *bias);
    check_sizes(kConvForward.op, "bias", *bias, {g.K});
  }
  run_forward(kConvForward.op, g, input.dtype, input.data, weight.data, bias ? bias->data : nullptr,
              output.data, p.relu, workspace, workspace_bytes, threads);
}

void conv2d_backward_input(const TensorView& grad_output, const TensorView& weight,
                           const TensorView& grad_input, const Conv2dParams& p, void* workspace,
                           size_t workspace_bytes, int threads) {
  check_threads(kConvBackwardInput.op, threads);
  const ConvGeom g = validate(kConvBackwardInput, grad_input, weight, grad_output, p);
  const auto as_forward = backward_input_as_forward(g, p);
  if (as_forward && forward_form_exact(g, weight)) {
    const char* w = static_cast<const char*>(weight.data) +
                    as_forward->weight_offset * static_cast<int64_t>(dtype_size(weight.dtype));
    return run_forward(kConvBackwardInput.op, as_forward->g, grad_input.dtype, grad_output.data, w,
                       nullptr, grad_input.data, false, workspace, workspace_bytes, threads);
  }
  if (phases_apply(g) && forward_form_exact(g, weight)) {
    check_workspace(kConvBackwardInput.op, workspace, workspace_bytes,
                    phases_workspace_bytes(g, grad_input.dtype, threads));
    if (grad_input.numel() == 0) return;
    return backward_input_by_phases(g, grad_input.dtype, grad_output.data, weight.data,
                                    grad_input.data, workspace, workspace_bytes, threads);
  }
  const Plan pl = plan_for(ConvPass::BackwardInput, g, grad_input.dtype, threads);
  check_workspace(kConvBackwardInput.op, workspace, workspace_bytes,
                  pl.total_elems() * dtype_size(grad_input.dtype));
  if (grad_input.numel() == 0) return;
  if (grad_input.dtype == DType::Float64)
    backward_input<double>(g, grad_output.ptr<double>(), weight.ptr<double>(),
                           grad_input.ptr<double>(), pl, static_cast<double*>(workspace));
  else
    backward_input<float>(g, grad_output.ptr<float>(), weight.ptr<float>(), grad_input.ptr<float>(),
                          pl, static_cast<float*>(workspace));
}

void conv2d_backward_weight(const TensorView& grad_output, const TensorView& input,
                            const TensorView& grad_weight, const Conv2dParams& p, void* workspace,
                            size_t workspace_bytes, int threads) {
  check_threads(kConvBackwardWeight.op, threads);
  const ConvGeom g = validate(kConvBackwardWeight, input, grad_weight, grad_output, p);
  const Plan pl = plan_for(ConvPass::BackwardWeight, g, input.dtype, threads);
  check_workspace(kConvBackwardWeight.op, workspace, workspace_bytes,
                  pl.total_elems() * dtype_size(input.dtype));
  if (g.N == 0) return zero(grad_weight);
  if (input.dtype == DType::Float64)
    backward_weight<double>(g, grad_output.ptr<double>(), input.ptr<double>(),
                            grad_weight.ptr<double>(), pl, static_cast<double*>(workspace));
  else
    backward_weight<float>(g, grad_output.ptr<float>(), input.ptr<float>(),
                           grad_weight.ptr<float>(), pl, static_cast<float*>(workspace));
}

void conv2d_backward_bias(const TensorView& grad_output, const TensorView& grad_bias, int threads) {
  const char* op = "conv2d_backward_bias";
  check_threads(op, threads);
  check_cpu_float(op, "grad_output", grad_output);
  const auto s = dense_strides_4d(op, "grad_output", grad_output);
  check_cpu_float(op, "grad_bias", grad_bias);
  check_same_dtype(op, "grad_bias", grad_bias, grad_output);
  check_contiguous(op, "grad_bias", grad_bias);
  const int64_t N = grad_output.sizes[0], K = grad_output.sizes[1],
                P = grad_output.sizes[2] * grad_output.sizes[3];
  check_sizes(op, "grad_bias", grad_bias, {K});
  auto run = [&](auto* dy, auto* db) {
    using T = std::remove_pointer_t<decltype(db)>;
    parallel_for(K, threads_for(N * K * P, 1 << 15, threads), [&](int, int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        double sum = 0;  // float32 sums of up to N*H*W terms stay accurate in double
        for (int64_t n = 0; n < N; ++n) {
          const T* row = dy + n * s[0] + k * s[1];
          for (int64_t i = 0; i < P; ++i) sum += row[i * s[3]];
        }
        db[k] = static_cast<T>(sum);
      }
    });
  };
  if (grad_output.dtype == DType::Float64)
    run(grad_output.ptr<double>(), grad_bias.ptr<double>());
  else
    run(grad_output.ptr<float>(), grad_bias.ptr<float>());
}

}  // namespace cpu
}  // namespace fastcnn
