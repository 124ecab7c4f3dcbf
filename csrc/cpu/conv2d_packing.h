// How each convolution pass reads its GEMM operands straight from the tensors
// (implicit im2col): no column buffer is ever materialized.
//
//   forward          out[k, p]      = sum_(c,r,s) W[k, c, r, s] * X[c, ih(p, r), iw(p, s)]
//   backward-input   dX[c, ih, iw] += dcol[(c,r,s), p],  dcol = W^T[(c,r,s), k] * dY[k, p]
//   backward-weight  dW[k, (c,r,s)] = sum_(n,p)   dY[n, k, p]   * X[n, c, ih(p, r), iw(p, s)]
//
// with ih = oh * stride - pad + r * dilation (and the same for w). Positions that fall in the
// padding read as zero (and, for backward-input, are not written).
#pragma once

#include <array>
#include <cstdint>

#include "cpu/conv2d_geom.h"
#include "cpu/gemm_driver.h"

namespace fastcnn::cpu {

// Forward B: rows (c, r, s) of one group, columns output positions [p0, p0 + ncols).
template <typename T>
struct PackImageColumns {
  const ConvGeom& g;
  const T* x;  // image n, first channel of the group
  int64_t p0, ncols;
  int nr;

  void operator()(int64_t k0, int64_t kc, T* dst) const {
    int64_t row_off[kBlockK], row_dh[kBlockK], row_dw[kBlockK];
    for (int64_t kk = 0; kk < kc; ++kk) {
      const int64_t j = k0 + kk, c = j / g.RS(), rs = j % g.RS();
      row_off[kk] = c * g.xs[1];
      row_dh[kk] = rs / g.S * g.dh;
      row_dw[kk] = rs % g.S * g.dw;
    }
    for (int64_t q0 = 0; q0 < ncols; q0 += nr) {
      const int nq = static_cast<int>(std::min<int64_t>(nr, ncols - q0));
      int64_t ih0[kMaxNR], iw0[kMaxNR];
      int64_t oh = (p0 + q0) / g.Wo, ow = (p0 + q0) % g.Wo;
      for (int jj = 0; jj < nq; ++jj) {
        ih0[jj] = oh * g.sh - g.ph;
        iw0[jj] = ow * g.sw - g.pw;
        if (++ow == g.Wo) ow = 0, ++oh;
      }
      T* d = dst + q0 * kc;
      for (int64_t kk = 0; kk < kc; ++kk, d += nr) {
        const T* xr = x + row_off[kk];
        for (int jj = 0; jj < nq; ++jj) {
          const int64_t ih = ih0[jj] + row_dh[kk], iw = iw0[jj] + row_dw[kk];
          d[jj] = in_range(ih, g.H) && in_range(iw, g.W) ? xr[ih * g.xs[2] + iw * g.xs[3]] : T(0);
        }
        for (int jj = nq; jj < nr; ++jj) d[jj] = T(0);
      }
    }
  }
};

// Backward-input B: rows k of one group, columns output positions [p0, p0 + ncols) of dY.
template <typename T>
struct PackGradOutputColumns {
  const ConvGeom& g;
  const T* dy;  // image n, first channel of the group
  int64_t p0, ncols;
  int nr;

  void operator()(int64_t k0, int64_t kc, T* dst) const {
    for (int64_t q0 = 0; q0 < ncols; q0 += nr) {
      const int nq = static_cast<int>(std::min<int64_t>(nr, ncols - q0));
      T* d = dst + q0 * kc;
      for (int64_t kk = 0; kk < kc; ++kk, d += nr) {
        const T* row = dy + (k0 + kk) * g.ys[1] + (p0 + q0) * g.ys[3];
        for (int jj = 0; jj < nq; ++jj) d[jj] = row[jj * g.ys[3]];
        for (int jj = nq; jj < nr; ++jj) d[jj] = T(0);
      }
    }
  }
};

// Backward-weight A: rows k of one group (all of them), reduction (n, p) in [k0, k0 + kc).
template <typename T>
struct PackGradOutputRows {
  const ConvGeom& g;
  const T* dy;  // first channel of the group, image 0
  int mr;
  T* buf;

  PanelsA<T> operator()(int64_t k0, int64_t kc) const {
    const int64_t M = g.Kg;
    for (int64_t kk = 0; kk < kc; ++kk) {
      const int64_t n = (k0 + kk) / g.P(), p = (k0 + kk) % g.P();
      const T* src = dy + n * g.ys[0] + p * g.ys[3];
      for (int64_t i0 = 0; i0 < M; i0 += mr) {
        T* d = buf + i0 * kc + kk * mr;
        for (int ii = 0; ii < mr; ++ii) d[ii] = i0 + ii < M ? src[(i0 + ii) * g.ys[1]] : T(0);
      }
    }
    return {buf, mr * kc};
  }
};

// Backward-weight B: reduction (n, p) in [k0, k0 + kc), columns (c, r, s) in [j0, j0 + ncols).
template <typename T>
struct PackImageRows {
  const ConvGeom& g;
  const T* x;  // first channel of the group, image 0
  int64_t j0, ncols;
  int nr;

  void operator()(int64_t k0, int64_t kc, T* dst) const {
    for (int64_t q0 = 0; q0 < ncols; q0 += nr) {
      const int nq = static_cast<int>(std::min<int64_t>(nr, ncols - q0));
      int64_t col_off[kMaxNR], col_dh[kMaxNR], col_dw[kMaxNR];
      for (int jj = 0; jj < nq; ++jj) {
        const int64_t j = j0 + q0 + jj, c = j / g.RS(), rs = j % g.RS();
        col_off[jj] = c * g.xs[1];
        col_dh[jj] = rs / g.S * g.dh;
        col_dw[jj] = rs % g.S * g.dw;
      }
      T* d = dst + q0 * kc;
      int64_t n = k0 / g.P(), p = k0 % g.P();
      for (int64_t kk = 0; kk < kc; ++kk, d += nr) {
        const T* xn = x + n * g.xs[0];
        const int64_t ih0 = p / g.Wo * g.sh - g.ph, iw0 = p % g.Wo * g.sw - g.pw;
        for (int jj = 0; jj < nq; ++jj) {
          const int64_t ih = ih0 + col_dh[jj], iw = iw0 + col_dw[jj];
          d[jj] = in_range(ih, g.H) && in_range(iw, g.W)
                      ? xn[col_off[jj] + ih * g.xs[2] + iw * g.xs[3]]
                      : T(0);
        }
        for (int jj = nq; jj < nr; ++jj) d[jj] = T(0);
        if (++p == g.P()) p = 0, ++n;
      }
    }
  }
};

// Backward-input store (col2im): adds dcol[(c, r, s), p] into dX[c, ih(p, r), iw(p, s)].
// Overlapping windows add into the same pixel, so one task owns each (image, channel).
template <typename T>
struct ScatterTile {
  const ConvGeom& g;
  T* dx;         // image n, first channel of the group
  int64_t row0;  // first row (c, r, s) of the task
  int64_t p0;    // first output position of the column block
  int nr;

  void operator()(int64_t m0, int64_t n0, int rows, int cols, const T* acc, bool, bool) const {
    int64_t ih0[kMaxNR], iw0[kMaxNR];
    for (int jj = 0; jj < cols; ++jj) {
      const int64_t p = p0 + n0 + jj;
      ih0[jj] = p / g.Wo * g.sh - g.ph;
      iw0[jj] = p % g.Wo * g.sw - g.pw;
    }
    for (int ii = 0; ii < rows; ++ii) {
      const int64_t j = row0 + m0 + ii, rs = j % g.RS();
      const int64_t dh = rs / g.S * g.dh, dw = rs % g.S * g.dw;
      T* plane = dx + j / g.RS() * g.xs[1];
      const T* a = acc + ii * nr;
      for (int jj = 0; jj < cols; ++jj) {
        const int64_t ih = ih0[jj] + dh, iw = iw0[jj] + dw;
        if (in_range(ih, g.H) && in_range(iw, g.W)) plane[ih * g.xs[2] + iw * g.xs[3]] += a[jj];
      }
    }
  }
};

// Writes a tile to a strided matrix; on the last reduction block adds bias and applies ReLU.
template <typename T>
struct StoreTile {
  T* base;
  int64_t row_stride;
  const int64_t* col_offset;  // offset of each column, relative to the task's first column
  int64_t col_stride;         // used when col_offset is null
  const T* bias;              // per row, may be null
  bool relu;
  int nr;

  void operator()(int64_t m0, int64_t n0, int rows, int cols, const T* acc, bool first,
                  bool last) const {
    for (int ii = 0; ii < rows; ++ii) {
      T* o = base + (m0 + ii) * row_stride;
      const T* a = acc + ii * nr;
      const T b = last && bias ? bias[m0 + ii] : T(0);
      for (int jj = 0; jj < cols; ++jj) {
        T& dst = o[col_offset ? col_offset[n0 + jj] : (n0 + jj) * col_stride];
        T v = first ? a[jj] : dst + a[jj];
        if (last) {
          v += b;
          if (relu && v < T(0)) v = T(0);  // NaN stays NaN, as torch.relu
        }
        dst = v;
      }
    }
  }
};

}  // namespace fastcnn::cpu
