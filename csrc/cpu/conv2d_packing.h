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

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>

#include "cpu/conv2d_geom.h"
#include "cpu/conv2d_image_columns.h"
#include "cpu/gemm_driver.h"
#include "cpu/isa_select.h"
#include "cpu/transpose_8x8.h"

namespace fastcnn::cpu {

// Output columns [lo, hi) of one kernel tap whose input column iw = ow * sw - pw + dw_tap
// falls inside [0, W): the rest read as zero padding.
struct ValidColumns {
  int64_t lo, hi;
};
inline ValidColumns valid_columns(const ConvGeom& g, int64_t dw_tap, int64_t Wo) {
  const int64_t first = g.pw - dw_tap, last = g.W - 1 + g.pw - dw_tap;
  const int64_t lo = first <= 0 ? 0 : (first + g.sw - 1) / g.sw;
  const int64_t hi = last < 0 ? 0 : last / g.sw + 1;
  return {std::min(lo, Wo), std::min(std::max(hi, lo), Wo)};
}

// Copies n elements src[t * step] to dst[t * dst_step]; the unit-stride case is a plain copy
// (input rows of stride-1 NCHW convolutions), which the compiler turns into vector moves.
template <typename T>
inline void copy_strided(const T* __restrict src, int64_t step, T* __restrict dst, int64_t dst_step,
                         int64_t n) {
  if (step == 1 && dst_step == 1) {
    for (int64_t t = 0; t < n; ++t) dst[t] = src[t];
  } else if (step == 2 && dst_step == 1) {  // stride-2 layers: a constant step vectorizes
    for (int64_t t = 0; t < n; ++t) dst[t] = src[2 * t];
  } else {
    for (int64_t t = 0; t < n; ++t) dst[t * dst_step] = src[t * step];
  }
}

// dst[t * step] += src[t] for t < n; the unit-stride case vectorizes.
template <typename T>
inline void add_strided(const T* __restrict src, T* __restrict dst, int64_t step, int64_t n) {
  if (step == 1) {
    for (int64_t t = 0; t < n; ++t) dst[t] += src[t];
  } else {
    for (int64_t t = 0; t < n; ++t) dst[t * step] += src[t];
  }
}

template <typename T>
inline void fill_zero(T* dst, int64_t dst_step, int64_t n) {
  for (int64_t t = 0; t < n; ++t) dst[t * dst_step] = T(0);
}

// What a position in the padding, or past the last one, reads: a reduction block of zeros.
template <typename T>
inline constexpr T kZeroRow[kBlockK] = {};

// d[t * mr + i] = row(i)[t] for i < mr, t < len: the A panel layout from mr unit-stride rows
// (a row each per output position). Eight float rows go through 8x8 transposes.
template <typename T, typename Row>
inline void pack_rows_transposed(const Row& row, int mr, int64_t len, T* d) {
  int64_t t = 0;
  if constexpr (std::is_same_v<T, float>) {
    if (mr == 8)
      for (; t + 8 <= len; t += 8)
        transpose_8x8_rows([&](int i) { return row(i) + t; }, d + t * 8, 8);
  }
  for (; t < len; ++t)
    for (int i = 0; i < mr; ++i) d[t * mr + i] = row(i)[t];
}

// Column j of the weight-gradient GEMM as (input channel, kernel tap): (c, r, s) with s
// fastest over NCHW images, (r, s, c) with c fastest over channels-innermost (NHWC) images,
// so that both of its operands pack from contiguous runs.
struct WeightColumn {
  int64_t c, rs;
};
// Runs of at least 8 channels: shorter ones (the 3-channel stem) pack better along rows.
inline bool weight_columns_by_tap(const ConvGeom& g) {
  return g.xs[1] == 1 && g.Cg >= 8;
}
inline WeightColumn weight_column(const ConvGeom& g, int64_t j) {
  return weight_columns_by_tap(g) ? WeightColumn{j % g.Cg, j / g.Cg}
                                  : WeightColumn{j / g.RS(), j % g.RS()};
}

// One run of output positions on output row oh, columns [ow, ow + len): reads input row
// ih = oh * sh - ph + dh_tap at columns shifted by dw_tap, zero where it leaves the image.
// `row` points at the input channel plane; dst advances by dst_step per position.
template <typename T>
inline void gather_output_row(const ConvGeom& g, const T* row, int64_t oh, int64_t ow, int64_t len,
                              int64_t dh_tap, int64_t dw_tap, ValidColumns v, T* dst,
                              int64_t dst_step) {
  const int64_t ih = oh * g.sh - g.ph + dh_tap;
  if (!in_range(ih, g.H)) return fill_zero(dst, dst_step, len);
  const int64_t lo = std::clamp(v.lo, ow, ow + len), hi = std::clamp(v.hi, lo, ow + len);
  fill_zero(dst, dst_step, lo - ow);
  copy_strided(row + ih * g.xs[2] + (lo * g.sw - g.pw + dw_tap) * g.xs[3], g.sw * g.xs[3],
               dst + (lo - ow) * dst_step, dst_step, hi - lo);
  fill_zero(dst + (hi - ow) * dst_step, dst_step, ow + len - hi);
}

// Forward B: rows (c, r, s) of one group, columns output positions [p0, p0 + ncols), packed
// by the chosen ISA's kernel.
template <typename T>
struct PackImageColumns {
  ImageColumns<T> cols;

  Panels<T> operator()(int64_t k0, int64_t kc, T* dst) const {
    for_dtype<T>(image_column_kernels()).pack(cols, k0, kc, dst);
    return {dst, kc * cols.nr};
  }
};

// Forward B as row windows (StageRowWindowsFn): output rows are whole column panels, kernel
// rows step one input row per output row, and panel rows are whole vectors (the stage's rows
// are written a vector at a time).
inline bool row_windows_apply(const ConvGeom& g, int nr, int64_t elem_size) {
  return g.Wo == nr && g.sh == 1 && g.dh == 1 && nr * elem_size % 64 == 0;
}

// Elements of the stage for ncols positions (whole output rows).
inline int64_t row_windows_elems(const ConvGeom& g, int64_t ncols) {
  return (ncols / g.Wo + g.R - 1) * g.Cg * g.S * g.Wo;
}

// Reduction row j of the row-windows order (r, c, s) as a filter tap.
inline int64_t row_windows_tap(const ConvGeom& g, int64_t j) {
  const int64_t r = j / (g.Cg * g.S), c = j / g.S % g.Cg, s = j % g.S;
  return filter_tap(g, c, r * g.S + s);
}

// Stages the windows once per task; every reduction block then reads its panels in place.
template <typename T>
struct PackRowWindows {
  ImageColumns<T> cols;
  T* stage;

  void stage_rows() const { for_dtype<T>(image_column_kernels()).stage_row_windows(cols, stage); }
  Panels<T> operator()(int64_t k0, int64_t, T*) const {
    return {stage + k0 * cols.nr, cols.g.Cg * cols.g.S * cols.nr};
  }
};

// Forward A over channels-innermost images (NHWC): rows are output positions
// [p0, p0 + rows), the reduction runs over (r, s, c) with c innermost, so each position
// reads one contiguous run of channels per kernel tap (the plan takes this path only for
// unit-stride channels). The output tile is then [positions] x [filters], which is how NHWC
// stores it.
template <typename T>
struct PackPixelRows {
  const ConvGeom& g;
  const T* x;  // image n, first channel of the group
  int64_t p0, rows;
  int mr;
  T* buf;

  Panels<T> operator()(int64_t k0, int64_t kc) const {
    int64_t ih0[kMaxMR], iw0[kMaxMR];
    const T* src[kMaxMR];
    for (int64_t i0 = 0; i0 < rows; i0 += mr) {
      for (int ii = 0; ii < mr; ++ii) {
        const int64_t p = p0 + i0 + ii;
        ih0[ii] = p / g.Wo * g.sh - g.ph;
        iw0[ii] = p % g.Wo * g.sw - g.pw;
      }
      for (int64_t kk = 0; kk < kc;) {  // runs of channels at one tap
        const int64_t j = k0 + kk, rs = j / g.Cg, c = j % g.Cg, len = std::min(kc - kk, g.Cg - c);
        const int64_t dh = rs / g.S * g.dh, dw = rs % g.S * g.dw;
        for (int ii = 0; ii < mr; ++ii) {
          const int64_t ih = ih0[ii] + dh, iw = iw0[ii] + dw;
          // Rows past the task's positions (the last panel's padding) read zeros too.
          src[ii] = i0 + ii < rows && in_range(ih, g.H) && in_range(iw, g.W)
                        ? x + ih * g.xs[2] + iw * g.xs[3] + c * g.xs[1]
                        : kZeroRow<T>;
        }
        pack_rows_transposed<T>([&](int ii) { return src[ii]; }, mr, len, buf + i0 * kc + kk * mr);
        kk += len;
      }
    }
    return {buf, mr * kc};
  }
};

// Backward-input A over NHWC gradients: rows are output positions [p0, p0 + rows), the
// reduction runs over filters k, which each position of dY holds side by side (unit stride:
// the plan takes this path only then).
template <typename T>
struct PackGradOutputPixelRows {
  const ConvGeom& g;
  const T* dy;  // image n, first filter of the group
  int64_t p0, rows;
  int mr;
  T* buf;

  Panels<T> operator()(int64_t k0, int64_t kc) const {
    const T* src[kMaxMR];
    for (int64_t i0 = 0; i0 < rows; i0 += mr) {
      for (int ii = 0; ii < mr; ++ii)
        src[ii] = i0 + ii < rows ? dy + (p0 + i0 + ii) * g.ys[3] + k0 : kZeroRow<T>;
      pack_rows_transposed<T>([&](int ii) { return src[ii]; }, mr, kc, buf + i0 * kc);
    }
    return {buf, mr * kc};
  }
};

// Backward-input B: rows k of one group, columns output positions [p0, p0 + ncols) of dY.
template <typename T>
struct PackGradOutputColumns {
  const ConvGeom& g;
  const T* dy;  // image n, first channel of the group
  int64_t p0, ncols;
  int nr;

  Panels<T> operator()(int64_t k0, int64_t kc, T* dst) const {
    // Row by row, so that each row of dY streams in order (see PackImageColumns).
    for (int64_t kk = 0; kk < kc; ++kk) {
      const T* row = dy + (k0 + kk) * g.ys[1] + p0 * g.ys[3];
      for (int64_t q0 = 0; q0 < ncols; q0 += nr) {
        const int64_t nq = std::min<int64_t>(nr, ncols - q0);
        T* d = dst + q0 * kc + kk * nr;
        copy_strided(row + q0 * g.ys[3], g.ys[3], d, 1, nq);
        fill_zero(d + nq, 1, nr - nq);
      }
    }
    return {dst, kc * nr};
  }
};

// Backward-weight A: rows k of one group (all of them), reduction (n, p) in [k0, k0 + kc).
// Walks each row of dY along positions (contiguous in NCHW) and transposes into the panels.
template <typename T>
struct PackGradOutputRows {
  const ConvGeom& g;
  const T* dy;  // first channel of the group, image 0
  int mr;
  T* buf;

  Panels<T> operator()(int64_t k0, int64_t kc) const {
    const int64_t M = g.Kg, rows = round_up(M, mr);
    if (g.ys[1] == 1) {  // NHWC: each position holds its filters side by side
      for (int64_t kk = 0, n = k0 / g.P(), p = k0 % g.P(); kk < kc; ++kk) {
        const T* src = dy + n * g.ys[0] + p * g.ys[3];
        for (int64_t i0 = 0; i0 < rows; i0 += mr) {
          const int64_t cnt = std::clamp<int64_t>(M - i0, 0, mr);
          copy_strided(src + i0, 1, buf + i0 * kc + kk * mr, 1, cnt);
          fill_zero(buf + i0 * kc + kk * mr + cnt, 1, mr - cnt);
        }
        if (++p == g.P()) p = 0, ++n;
      }
      return {buf, mr * kc};
    }
    for (int64_t i = 0; i < rows; ++i) {
      T* d = buf + i / mr * mr * kc + i % mr;
      if (i >= M) {
        fill_zero(d, mr, kc);
        continue;
      }
      for (int64_t kk = 0, n = k0 / g.P(), p = k0 % g.P(); kk < kc; p = 0, ++n) {
        const int64_t len = std::min(kc - kk, g.P() - p);
        copy_strided(dy + n * g.ys[0] + i * g.ys[1] + p * g.ys[3], g.ys[3], d + kk * mr, mr, len);
        kk += len;
      }
    }
    return {buf, mr * kc};
  }
};

// Backward-weight B: reduction (n, p) in [k0, k0 + kc), columns (c, r, s) in [j0, j0 + ncols).
// Each column walks the reduction in runs along output rows, copied without bound checks.
template <typename T>
struct PackImageRows {
  const ConvGeom& g;
  const T* x;  // first channel of the group, image 0
  int64_t j0, ncols;
  int nr;

  Panels<T> operator()(int64_t k0, int64_t kc, T* dst) const {
    if (weight_columns_by_tap(g)) return pack_channel_runs(k0, kc, dst);
    const bool flat = positions_are_flat(g) && g.xs[3] == 1;
    for (int64_t q0 = 0; q0 < ncols; q0 += nr) {
      const int64_t nq = std::min<int64_t>(nr, ncols - q0);
      T* panel = dst + q0 * kc;
      if (flat)
        transpose_flat(j0 + q0, nq, k0, kc, panel);
      else
        for (int64_t jj = 0; jj < nq; ++jj) gather_column(j0 + q0 + jj, k0, kc, panel + jj);
      for (int64_t jj = nq; jj < nr; ++jj) fill_zero(panel + jj, nr, kc);
    }
    return {dst, kc * nr};
  }

  // Column j's positions [k0, k0 + kc), run by run along output rows, nr apart in d.
  void gather_column(int64_t j, int64_t k0, int64_t kc, T* d) const {
    const WeightColumn wc = weight_column(g, j);
    const int64_t dh_tap = wc.rs / g.S * g.dh, dw_tap = wc.rs % g.S * g.dw;
    const ValidColumns v = valid_columns(g, dw_tap, g.Wo);
    int64_t n = k0 / g.P(), p = k0 % g.P();
    for (int64_t kk = 0; kk < kc;) {
      const int64_t oh = p / g.Wo, ow = p % g.Wo, len = std::min(kc - kk, g.Wo - ow);
      gather_output_row(g, x + n * g.xs[0] + wc.c * g.xs[1], oh, ow, len, dh_tap, dw_tap, v,
                        d + kk * nr, nr);
      kk += len, p += len;
      if (p == g.P()) p = 0, ++n;
    }
  }

  // 1x1, stride 1, unpadded, NCHW: columns [j, j + nq) are those channels, whose positions are
  // one run per image, so they go in by 8x8 transposes (column by column, element by element
  // at a stride of nr, the packing took a third of C12's weight gradient).
  void transpose_flat(int64_t j, int64_t nq, int64_t k0, int64_t kc, T* panel) const {
    const T* xj = x + j * g.xs[1];
    for (int64_t kk = 0, n = k0 / g.P(), p = k0 % g.P(); kk < kc; p = 0, ++n) {
      const int64_t len = std::min(kc - kk, g.P() - p);
      transpose_into(xj + n * g.xs[0] + p, g.xs[1], nq, len, panel + kk * nr, nr, 1);
      kk += len;
    }
  }

  // NHWC: columns (r, s, c) read a run of channels per kernel tap at each position.
  Panels<T> pack_channel_runs(int64_t k0, int64_t kc, T* dst) const {
    for (int64_t kk = 0, n = k0 / g.P(), p = k0 % g.P(); kk < kc; ++kk) {
      const int64_t oh = p / g.Wo, ow = p % g.Wo;
      const T* xn = x + n * g.xs[0];
      for (int64_t q0 = 0; q0 < ncols; q0 += nr) {
        const int64_t nq = std::min<int64_t>(nr, ncols - q0);
        T* d = dst + q0 * kc + kk * nr;
        for (int64_t jj = 0; jj < nq;) {
          const WeightColumn wc = weight_column(g, j0 + q0 + jj);
          const int64_t len = std::min(nq - jj, g.Cg - wc.c);
          const int64_t ih = oh * g.sh - g.ph + wc.rs / g.S * g.dh;
          const int64_t iw = ow * g.sw - g.pw + wc.rs % g.S * g.dw;
          if (in_range(ih, g.H) && in_range(iw, g.W))
            copy_strided(xn + ih * g.xs[2] + iw * g.xs[3] + wc.c, 1, d + jj, 1, len);
          else
            fill_zero(d + jj, 1, len);
          jj += len;
        }
        fill_zero(d + nq, 1, nr - nq);
      }
      if (++p == g.P()) p = 0, ++n;
    }
    return {dst, kc * nr};
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
  const MicroKernel<T>& mk;

  bool row_runs() const { return false; }
  void operator()(int64_t kc, const T* a, const T* b, int64_t m0, int64_t n0, int rows, int cols,
                  bool, bool) const {
    alignas(64) T acc[kMaxMR * kMaxNR];
    mk.run(kc, a, b, acc);
    for (int ii = 0; ii < rows; ++ii) {
      const int64_t j = row0 + m0 + ii, rs = j % g.RS();
      const int64_t dh_tap = rs / g.S * g.dh, dw_tap = rs % g.S * g.dw;
      const ValidColumns v = valid_columns(g, dw_tap, g.Wo);
      T* plane = dx + j / g.RS() * g.xs[1];
      const T* t = acc + ii * mk.nr;
      for (int64_t jj = 0, p = p0 + n0; jj < cols;) {
        const int64_t oh = p / g.Wo, ow = p % g.Wo, len = std::min<int64_t>(cols - jj, g.Wo - ow);
        const int64_t ih = oh * g.sh - g.ph + dh_tap;
        if (in_range(ih, g.H)) {
          const int64_t lo = std::clamp(v.lo, ow, ow + len), hi = std::clamp(v.hi, lo, ow + len);
          add_strided(t + jj + (lo - ow),
                      plane + ih * g.xs[2] + (lo * g.sw - g.pw + dw_tap) * g.xs[3], g.sw * g.xs[3],
                      hi - lo);
        }
        jj += len, p += len;
      }
    }
  }
};

// Backward-input store over NHWC (col2im): tile rows are output positions, columns
// (r, s, c) with c fastest; each run of channels at one tap adds into one pixel of dX.
template <typename T>
struct ScatterPixelTile {
  const ConvGeom& g;
  T* dx;       // image n, first channel of the group
  int64_t p0;  // first output position of the task
  const MicroKernel<T>& mk;

  bool row_runs() const { return false; }
  void operator()(int64_t kc, const T* a, const T* b, int64_t m0, int64_t n0, int rows, int cols,
                  bool, bool) const {
    alignas(64) T acc[kMaxMR * kMaxNR];
    mk.run(kc, a, b, acc);
    for (int ii = 0; ii < rows; ++ii) {
      const int64_t p = p0 + m0 + ii, oh = p / g.Wo, ow = p % g.Wo;
      const T* t = acc + ii * mk.nr;
      for (int64_t jj = 0; jj < cols;) {
        const int64_t j = n0 + jj, rs = j / g.Cg, c = j % g.Cg;
        const int64_t len = std::min<int64_t>(cols - jj, g.Cg - c);
        const int64_t ih = oh * g.sh - g.ph + rs / g.S * g.dh;
        const int64_t iw = ow * g.sw - g.pw + rs % g.S * g.dw;
        if (in_range(ih, g.H) && in_range(iw, g.W))
          add_strided(t + jj, dx + ih * g.xs[2] + iw * g.xs[3] + c * g.xs[1], g.xs[1], len);
        jj += len;
      }
    }
  }
};

// Stores tiles straight from the micro-kernel's registers into a matrix whose columns are
// adjacent in memory (row stride `row_stride`) or, with col_stride != 1, whose rows are
// (row_stride 1: an NHWC output, a column is a pixel and its rows the filters); on the last
// reduction block adds the bias and applies the ReLU.
template <typename T>
struct StoreTile {
  const MicroKernel<T>& mk;
  T* base;
  int64_t row_stride;
  const T* bias;  // per row (or per column, see below), may be null
  bool relu;
  bool bias_per_column = false;
  int64_t col_stride = 1;
  int64_t a_row_stride = 0;  // > 0: A panels are rows read in place, this far apart

  bool row_runs() const { return col_stride == 1; }
  void operator()(int64_t kc, const T* a, const T* b, int64_t m0, int64_t n0, int rows, int cols,
                  bool first, bool last) const {
    Epilogue<T> ep;
    ep.accumulate = !first;
    if (last && bias && bias_per_column)
      ep.col_bias = bias + n0;
    else if (last && bias)
      ep.bias = bias + m0;
    ep.relu = last && relu;
    ep.transposed = col_stride != 1;
    T* c = base + m0 * row_stride + n0 * col_stride;
    const int64_t ldc = ep.transposed ? col_stride : row_stride;
    if (a_row_stride > 0)
      mk.run_store_rows(kc, a, a_row_stride, b, c, ldc, rows, cols, ep);
    else
      mk.run_store(kc, a, b, c, ldc, rows, cols, ep);
  }
};

// Stores tiles into a matrix whose columns sit at listed offsets (weight gradients): through a
// small buffer, element by element.
template <typename T>
struct ScatterStoreTile {
  const MicroKernel<T>& mk;
  T* base;
  int64_t row_stride;
  const int64_t* col_offset;  // relative to the task's first column

  bool row_runs() const { return false; }
  void operator()(int64_t kc, const T* a, const T* b, int64_t m0, int64_t n0, int rows, int cols,
                  bool first, bool) const {
    alignas(64) T acc[kMaxMR * kMaxNR];
    mk.run(kc, a, b, acc);
    for (int ii = 0; ii < rows; ++ii) {
      T* o = base + (m0 + ii) * row_stride;
      for (int jj = 0; jj < cols; ++jj) {
        T& dst = o[col_offset[n0 + jj]];
        dst = first ? acc[ii * mk.nr + jj] : dst + acc[ii * mk.nr + jj];
      }
    }
  }
};

}  // namespace fastcnn::cpu
