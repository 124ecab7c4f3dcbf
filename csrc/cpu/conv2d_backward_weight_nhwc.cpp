// The backward-weight driver over outer products of channels-innermost rows (see
// conv2d_backward_weight_nhwc.h): runs per block and tap, Inf and NaN over the padding, threads
// and the partial sums.
#include <algorithm>
#include <cstdint>

#include "cpu/conv2d_backward_weight_nhwc.h"
#include "cpu/conv2d_packing.h"
#include "cpu/isa_select.h"
#include "cpu/parallel.h"

namespace fastcnn::cpu {
namespace {

template <typename T>
OuterGemm<T> outer_gemm_for() {
  return for_dtype<T>(outer_kernels());
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

}  // namespace

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

template void outer_backward_weight<float>(const ConvGeom& g, const float* dy, const float* x,
                                           float* dw, const OuterPlan& pl, float* ws);
template void outer_backward_weight<double>(const ConvGeom& g, const double* dy, const double* x,
                                            double* dw, const OuterPlan& pl, double* ws);

}  // namespace fastcnn::cpu
