// The backward-weight driver over dot products along positions (see conv2d_backward_weight.h):
// packing of dY and the image columns, blocks, threads and the partial sums.
#include <algorithm>
#include <cstdint>

#include "cpu/conv2d_backward_weight.h"
#include "cpu/conv2d_packing.h"
#include "cpu/isa_select.h"
#include "cpu/parallel.h"

namespace fastcnn::cpu {
namespace {

// The kernels built for the same ISA as the micro-kernel in use.
const DotKernels& dot_kernels() {
  static const DotKernels chosen = FASTCNN_FOR_CHOSEN_ISA(dot_kernels);
  return chosen;
}
template <typename T>
DotGemm<T> dot_gemm_for() {
  return for_dtype<T>(dot_kernels());
}

// Rows [0, rows) of a matrix whose row i holds positions q = (n, p) at
// base + n * sn + i * si + p * sp: the positions [q0, q0 + len) of each row, as rows of ld
// elements, zero past len up to `padded`.
template <typename T>
void pack_position_rows(const T* base, int64_t sn, int64_t si, int64_t sp, int64_t P, int64_t rows,
                        int64_t q0, int64_t len, int64_t padded, T* dst, int64_t ld) {
  for (int64_t i = 0; i < rows; ++i) {
    T* d = dst + i * ld;
    for (int64_t kk = 0, n = q0 / P, p = q0 % P; kk < len; p = 0, ++n) {
      const int64_t run = std::min(len - kk, P - p);
      copy_strided(base + n * sn + i * si + p * sp, sp, d + kk, 1, run);
      kk += run;
    }
    fill_zero(d + len, 1, padded - len);
  }
}

// Columns (c, r, s) in [j0, j0 + ncols) of col over positions [q0, q0 + len): per column, runs
// along output rows of the shifted image plane, zero where the tap reads padding.
template <typename T>
void pack_column_rows(const ConvGeom& g, const T* x, int64_t j0, int64_t ncols, int64_t q0,
                      int64_t len, int64_t padded, T* dst, int64_t ld) {
  for (int64_t jj = 0; jj < ncols; ++jj) {
    const int64_t c = (j0 + jj) / g.RS(), rs = (j0 + jj) % g.RS();
    const int64_t dh_tap = rs / g.S * g.dh, dw_tap = rs % g.S * g.dw;
    const ValidColumns v = valid_columns(g, dw_tap, g.Wo);
    T* d = dst + jj * ld;
    for (int64_t kk = 0, n = q0 / g.P(), p = q0 % g.P(); kk < len;) {
      const int64_t oh = p / g.Wo, ow = p % g.Wo, run = std::min(len - kk, g.Wo - ow);
      gather_output_row(g, x + n * g.xs[0] + c * g.xs[1], oh, ow, run, dh_tap, dw_tap, v, d + kk,
                        1);
      kk += run, p += run;
      if (p == g.P()) p = 0, ++n;
    }
    fill_zero(d + len, 1, padded - len);
  }
}

// Shifted: dY's rows k over padded-grid rows [v0, v0 + rows) (row v: image v / Hp, output
// row v % Hp), zero past each output row's Wo and on rows past Ho.
template <typename T>
void pack_grid_grad_rows(const ConvGeom& g, const DotPlan& pl, const T* dy, int64_t v0,
                         int64_t rows, int64_t padded, T* dst) {
  for (int64_t k = 0; k < g.Kg; ++k) {
    T* d = dst + k * pl.block;
    for (int64_t v = v0; v < v0 + rows; ++v, d += pl.Wp) {
      const int64_t n = v / pl.Hp, oh = v % pl.Hp;
      const bool real = n < g.N && oh < g.Ho;
      if (real) copy_strided(dy + n * g.ys[0] + k * g.ys[1] + oh * g.ys[2], g.ys[3], d, 1, g.Wo);
      fill_zero(d + (real ? g.Wo : 0), 1, real ? pl.Wp - g.Wo : pl.Wp);
    }
    fill_zero(dst + k * pl.block + rows * pl.Wp, 1, padded - rows * pl.Wp);
  }
}

// Shifted: each channel's padded input rows under grid rows [v0, v0 + pl.rows + (R-1) * dh),
// zero past them up to pl.plane. Returns false when they hold Inf or NaN: positions outside
// dY's corner would then add 0 * Inf = NaN where the convolution reads no such product.
template <typename T>
bool pack_grid_planes(const ConvGeom& g, const DotPlan& pl, const T* x, int64_t v0, T* dst) {
  const int64_t rows = pl.rows + (g.R - 1) * g.dh;
  bool finite = true;
  for (int64_t c = 0; c < g.Cg; ++c) {
    T* d = dst + c * pl.plane;
    for (int64_t v = v0; v < v0 + rows; ++v, d += pl.Wp) {
      const int64_t n = v / pl.Hp, ih = v % pl.Hp - g.ph;
      if (n >= g.N || !in_range(ih, g.H)) {
        fill_zero(d, 1, pl.Wp);
        continue;
      }
      fill_zero(d, 1, g.pw);
      copy_strided(x + n * g.xs[0] + c * g.xs[1] + ih * g.xs[2], g.xs[3], d + g.pw, 1, g.W);
      fill_zero(d + g.pw + g.W, 1, pl.Wp - g.pw - g.W);
      bool row_finite = true;  // x - x is 0 exactly for finite x
      for (int64_t t = g.pw; t < g.pw + g.W; ++t) row_finite &= d[t] - d[t] == T(0);
      finite = finite && row_finite;
    }
    fill_zero(d, 1, dst + (c + 1) * pl.plane - d);
  }
  return finite;
}

}  // namespace

template <typename T>
void dot_backward_weight(const ConvGeom& g, const T* dy, const T* x, T* dw, const DotPlan& pl,
                         T* ws) {
  const DotGemm<T> gemm = dot_gemm_for<T>();
  const int64_t lanes = kDotAlign / static_cast<int64_t>(sizeof(T));
  // Shifted: slices and blocks of padded-grid rows; otherwise of positions (n, p).
  const int64_t extent = pl.shifted ? g.N * pl.Hp : g.N * g.P();
  const int64_t step = pl.shifted ? pl.rows : pl.block;
  T* partial = ws + pl.threads * pl.thread_elems();
  // Tasks (split, group): a thread's tasks are whole slices.
  parallel_for(pl.splits * g.G, pl.threads, [&](int tid, int64_t begin, int64_t end) {
    T* abuf = ws + tid * pl.thread_elems();
    T* bbuf = abuf + pl.a_elems;
    const T* brow[kDotColumns];
    for (int64_t t = begin; t < end; ++t) {
      const int64_t split = t / g.G, grp = t % g.G;
      // dY in place: slices of whole vectors, so that every block is.
      const int64_t unit = pl.direct || pl.grad_in_place ? lanes : 1;
      const int64_t e_begin = split * (extent / unit) / pl.splits * unit,
                    e_end = split + 1 == pl.splits
                                ? extent
                                : (split + 1) * (extent / unit) / pl.splits * unit;
      T* c = partial + split * pl.partial_elems + grp * g.Kg * pl.cols;
      std::fill(c, c + g.Kg * pl.cols, T(0));
      const T* dyg = dy + grp * g.Kg * g.ys[1];
      const T* xg = x + grp * g.Cg * g.xs[1];
      // Positions [q0, q0 + len) through packed columns.
      auto packed_block = [&](int64_t q0, int64_t len) {
        const int64_t padded = round_up(len, lanes);
        pack_position_rows(dyg, g.ys[0], g.ys[1], g.ys[3], g.P(), g.Kg, q0, len, padded, abuf,
                           pl.block);
        for (int64_t j0 = 0; j0 < pl.cols; j0 += pl.col_block) {
          const int64_t ncols = std::min(pl.col_block, pl.cols - j0);
          pack_column_rows(g, xg, j0, ncols, q0, len, padded, bbuf, pl.block);
          for (int64_t jj = 0; jj < ncols; ++jj) brow[jj] = bbuf + jj * pl.block;
          gemm(g.Kg, ncols, padded, abuf, pl.block, brow, c + j0, pl.cols);
        }
      };
      // Output positions before padded-grid row v (rows past Ho hold none).
      auto positions_before = [&](int64_t v) {
        return v / pl.Hp * g.P() + std::min(v % pl.Hp, g.Ho) * g.Wo;
      };
      for (int64_t e0 = e_begin, len = 0; e0 < e_end; e0 += len) {
        len = std::min(step, e_end - e0);
        if (pl.direct || pl.grad_in_place) {
          const int64_t n = e0 / g.P(), p = e0 % g.P();
          len = std::min(len, g.P() - p);
          for (int64_t j0 = 0; j0 < pl.cols; j0 += pl.col_block) {
            const int64_t ncols = std::min(pl.col_block, pl.cols - j0);
            if (pl.grad_in_place) pack_column_rows(g, xg, j0, ncols, e0, len, len, bbuf, pl.block);
            for (int64_t jj = 0; jj < ncols; ++jj)
              brow[jj] =
                  pl.direct ? xg + n * g.xs[0] + (j0 + jj) * g.xs[1] + p : bbuf + jj * pl.block;
            gemm(g.Kg, ncols, len, dyg + n * g.ys[0] + p, g.ys[1], brow, c + j0, pl.cols);
          }
          continue;
        }
        if (!pl.shifted) {
          packed_block(e0, len);
          continue;
        }
        if (!pack_grid_planes(g, pl, xg, e0, bbuf)) {
          const int64_t q0 = positions_before(e0);
          if (positions_before(e0 + len) > q0) packed_block(q0, positions_before(e0 + len) - q0);
          continue;
        }
        const int64_t padded = round_up(len * pl.Wp, lanes);
        pack_grid_grad_rows(g, pl, dyg, e0, len, padded, abuf);
        for (int64_t j0 = 0; j0 < pl.cols; j0 += pl.col_block) {
          const int64_t ncols = std::min(pl.col_block, pl.cols - j0);
          for (int64_t jj = 0; jj < ncols; ++jj) {
            const int64_t j = j0 + jj, rs = j % g.RS();
            brow[jj] = bbuf + j / g.RS() * pl.plane + rs / g.S * g.dh * pl.Wp + rs % g.S * g.dw;
          }
          gemm(g.Kg, ncols, padded, abuf, pl.block, brow, c + j0, pl.cols);
        }
      }
    }
  });
  // dW from the partial sums, added in split order.
  parallel_for(g.K, pl.threads, [&](int, int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k)
      for (int64_t j = 0; j < pl.cols; ++j) {
        T sum = partial[k * pl.cols + j];
        for (int64_t s = 1; s < pl.splits; ++s)
          sum += partial[s * pl.partial_elems + k * pl.cols + j];
        dw[k * g.ws[0] + filter_tap(g, j / g.RS(), j % g.RS())] = sum;
      }
  });
}

template void dot_backward_weight<float>(const ConvGeom& g, const float* dy, const float* x,
                                         float* dw, const DotPlan& pl, float* ws);
template void dot_backward_weight<double>(const ConvGeom& g, const double* dy, const double* x,
                                          double* dw, const DotPlan& pl, double* ws);

}  // namespace fastcnn::cpu
