// The three convolution passes as implicit GEMMs, per group g:
//   forward          Y[k, (n,oh,ow)]   = sum over (c,r,s)    W[k, c,r,s] * X[(c,r,s), (n,oh,ow)]
//   backward-input   dX[c, (n,h,w)]    = sum over (k,r,s)    W[k, c,r,s] * dY[(k,r,s), (n,h,w)]
//   backward-weight  dW[k, (c,r,s)]    = sum over (n,oh,ow)  dY[k, (n,oh,ow)] * X[(n,oh,ow),
//   (c,r,s)]
// Each pass is an Op that reads the operands A[M x Kd] and B[Kd x Ncol] straight from the
// tensors: row_a(g, m) / col_b(g, j) resolve the part of an address that depends on the row
// of A or the column of B (once per block: a thread loads the same rows and columns at every
// reduction step), a_at(row, q) / b_at(col, q) add the reduction index q and load (zero
// outside the image: the padding, and for backward-input the positions no strided window
// reaches). store(g, slice, m, j, acc) writes C. Backward-input gathers (each dX element
// sums its own terms), so no pass needs atomics.
//
// Reduction orders put the channel innermost when the tensor read along it is channels_last,
// so that neighbouring q read neighbouring memory; a_m_fastest / b_q_fastest tell the tile
// loaders which index runs along memory.
#pragma once

#include <cstdint>

#include "cuda/common.cuh"

namespace fastcnn::cuda {

// The geometry of one convolution in the kernels' index type (int32 when every flat
// position fits, else int64). Strides are in elements, in (n, c, h, w) order.
template <typename I>
struct ConvGeom {
  I N, C, H, W, K, Ho, Wo, R, S, G, Cg, Kg;
  I sh, sw, ph, pw, dh, dw;
  I xs[4], ws[4], ys[4];  // image (input or grad_input), weight, output (or grad_output)
  bool x_cl, y_cl;        // image / output channels_last
  bool w_rows_dense;      // filter k's weights are w[k * ws[0] + q] in crs()'s order of q
  FASTCNN_HD I P() const { return Ho * Wo; }
  FASTCNN_HD I RS() const { return R * S; }
  // (c, r, s) of a reduction or column index over Cg * R * S, channel innermost for an
  // NHWC image.
  FASTCNN_HD void crs(I q, I& c, I& r, I& s) const {
    if (x_cl) {
      c = q % Cg;
      const I rs = q / Cg;
      r = rs / S, s = rs % S;
    } else {
      s = q % S;
      const I t = q / S;
      r = t % R, c = t / R;
    }
  }
  // (n, oh, ow) of an output position.
  FASTCNN_HD void nhw(I j, I& n, I& oh, I& ow) const {
    n = j / P();
    const I p = j % P();
    oh = p / Wo, ow = p % Wo;
  }
};

// Whether filter k's weights lie at w[k * ws[0] + q] for q in crs()'s order: the forward
// then reads its A operand as the dense matrix it is.
template <typename I>
bool weight_rows_dense(const ConvGeom<I>& g) {
  return g.x_cl ? g.ws[1] == 1 && g.ws[3] == g.Cg && g.ws[2] == g.S * g.Cg
                : g.ws[3] == 1 && g.ws[2] == g.S && g.ws[1] == g.R * g.S;
}

template <typename T, typename I>
struct ForwardOp {
  using Index = I;
  using Elem = T;
  ConvGeom<I> g;
  const T* x;
  const T* w;
  const T* bias;  // may be null
  T* y;
  bool relu;

  FASTCNN_HD I groups() const { return g.G; }
  FASTCNN_HD I rows() const { return g.Kg; }
  FASTCNN_HD I cols() const { return g.N * g.P(); }
  FASTCNN_HD I depth() const { return g.Cg * g.RS(); }
  FASTCNN_HD bool a_m_fastest() const { return false; }
  FASTCNN_HD bool b_q_fastest() const { return g.x_cl; }

  struct RowA {
    I base;  // filter k's weights
  };
  struct ColB {
    I base, ih0, iw0;  // image n of the group; the window's top-left corner
  };
  FASTCNN_HD RowA row_a(I grp, I m) const { return {(grp * g.Kg + m) * g.ws[0]}; }
  FASTCNN_HD float a_at(const RowA& row, I q) const {
    if (g.w_rows_dense) return to_float(w[row.base + q]);
    I c, r, s;
    g.crs(q, c, r, s);
    return to_float(w[row.base + c * g.ws[1] + r * g.ws[2] + s * g.ws[3]]);
  }
  FASTCNN_HD ColB col_b(I grp, I j) const {
    I n, oh, ow;
    g.nhw(j, n, oh, ow);
    return {n * g.xs[0] + grp * g.Cg * g.xs[1], oh * g.sh - g.ph, ow * g.sw - g.pw};
  }
  FASTCNN_HD float b_at(const ColB& col, I q) const {
    I c, r, s;
    g.crs(q, c, r, s);
    const I ih = col.ih0 + r * g.dh, iw = col.iw0 + s * g.dw;
    if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) return 0.f;
    return to_float(x[col.base + c * g.xs[1] + ih * g.xs[2] + iw * g.xs[3]]);
  }
  // Filter k's output from its sum: bias, then ReLU.
  FASTCNN_HD T finish(I k, float acc) const {
    float v = bias ? acc + to_float(bias[k]) : acc;
    if (relu) v = v < 0.f ? 0.f : v;  // NaN passes, as in torch.relu
    return from_float<T>(v);
  }
  FASTCNN_HD void store(I grp, I /*slice*/, I m, I j, float acc) const {
    I n, oh, ow;
    g.nhw(j, n, oh, ow);
    const I k = grp * g.Kg + m;
    y[n * g.ys[0] + k * g.ys[1] + oh * g.ys[2] + ow * g.ys[3]] = finish(k, acc);
  }
};

template <typename T, typename I>
struct BackwardInputOp {
  using Index = I;
  using Elem = T;
  ConvGeom<I> g;
  const T* dy;
  const T* w;
  T* dx;

  FASTCNN_HD I groups() const { return g.G; }
  FASTCNN_HD I rows() const { return g.Cg; }
  FASTCNN_HD I cols() const { return g.N * g.H * g.W; }
  FASTCNN_HD I depth() const { return g.Kg * g.RS(); }
  FASTCNN_HD bool a_m_fastest() const { return false; }
  FASTCNN_HD bool b_q_fastest() const { return g.y_cl; }

  // (k, r, s) of a reduction index, filter innermost for an NHWC grad_output.
  FASTCNN_HD void krs(I q, I& k, I& r, I& s) const {
    if (g.y_cl) {
      k = q % g.Kg;
      const I rs = q / g.Kg;
      r = rs / g.S, s = rs % g.S;
    } else {
      s = q % g.S;
      const I t = q / g.S;
      r = t % g.R, k = t / g.R;
    }
  }
  struct RowA {
    I base;  // input channel m of the group's filters
  };
  struct ColB {
    I base, h, w;  // image n of the group's grad_output; the input position
  };
  FASTCNN_HD RowA row_a(I grp, I m) const { return {grp * g.Kg * g.ws[0] + m * g.ws[1]}; }
  FASTCNN_HD float a_at(const RowA& row, I q) const {
    I k, r, s;
    krs(q, k, r, s);
    return to_float(w[row.base + k * g.ws[0] + r * g.ws[2] + s * g.ws[3]]);
  }
  FASTCNN_HD ColB col_b(I grp, I j) const {
    const I n = j / (g.H * g.W), hw = j % (g.H * g.W);
    return {n * g.ys[0] + grp * g.Kg * g.ys[1], hw / g.W, hw % g.W};
  }
  FASTCNN_HD float b_at(const ColB& col, I q) const {
    I k, r, s;
    krs(q, k, r, s);
    // The output position whose window puts tap (r, s) on (h, w), if any.
    const I th = col.h + g.ph - r * g.dh, tw = col.w + g.pw - s * g.dw;
    if (th < 0 || tw < 0 || th % g.sh != 0 || tw % g.sw != 0) return 0.f;
    const I oh = th / g.sh, ow = tw / g.sw;
    if (oh >= g.Ho || ow >= g.Wo) return 0.f;
    return to_float(dy[col.base + k * g.ys[1] + oh * g.ys[2] + ow * g.ys[3]]);
  }
  FASTCNN_HD void store(I grp, I /*slice*/, I m, I j, float acc) const {
    const I n = j / (g.H * g.W), hw = j % (g.H * g.W);
    dx[n * g.xs[0] + (grp * g.Cg + m) * g.xs[1] + hw / g.W * g.xs[2] + hw % g.W * g.xs[3]] =
        from_float<T>(acc);
  }
};

// Backward-weight writes float partial sums per reduction slice into the workspace,
// [slice][group][Kg][Cg*R*S]; reduce_one adds them in slice order into dW.
template <typename T, typename I>
struct BackwardWeightOp {
  using Index = I;
  using Elem = T;
  ConvGeom<I> g;
  const T* dy;
  const T* x;
  float* partial;

  FASTCNN_HD I groups() const { return g.G; }
  FASTCNN_HD I rows() const { return g.Kg; }
  FASTCNN_HD I cols() const { return g.Cg * g.RS(); }
  FASTCNN_HD I depth() const { return g.N * g.P(); }
  FASTCNN_HD bool a_m_fastest() const { return g.y_cl; }
  FASTCNN_HD bool b_q_fastest() const { return !g.x_cl; }

  struct RowA {
    I base;  // filter k's grad_output channel
  };
  struct ColB {
    I base, r, s;  // input channel c of the group; the tap
  };
  FASTCNN_HD RowA row_a(I grp, I m) const { return {(grp * g.Kg + m) * g.ys[1]}; }
  FASTCNN_HD float a_at(const RowA& row, I q) const {
    I n, oh, ow;
    g.nhw(q, n, oh, ow);
    return to_float(dy[row.base + n * g.ys[0] + oh * g.ys[2] + ow * g.ys[3]]);
  }
  FASTCNN_HD ColB col_b(I grp, I j) const {
    I c, r, s;
    g.crs(j, c, r, s);
    return {(grp * g.Cg + c) * g.xs[1], r, s};
  }
  FASTCNN_HD float b_at(const ColB& col, I q) const {
    I n, oh, ow;
    g.nhw(q, n, oh, ow);
    const I ih = oh * g.sh - g.ph + col.r * g.dh, iw = ow * g.sw - g.pw + col.s * g.dw;
    if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) return 0.f;
    return to_float(x[col.base + n * g.xs[0] + ih * g.xs[2] + iw * g.xs[3]]);
  }
  FASTCNN_HD void store(I grp, I slice, I m, I j, float acc) const {
    partial[((slice * g.G + grp) * g.Kg + m) * cols() + j] = acc;
  }
};

// Element i of the filter-major [K][Cg*R*S] partial sums: their sum over the slices, in
// slice order, written to dW in its layout.
template <typename T, typename I>
FASTCNN_HD void reduce_one(const float* __restrict__ partial, T* __restrict__ dw,
                           const ConvGeom<I>& g, I slices, I i) {
  const I cols = g.Cg * g.RS(), per_slice = g.K * cols;
  float sum = 0.f;
  for (I z = 0; z < slices; ++z) sum += partial[z * per_slice + i];
  // i = (group * Kg + m) * cols + j, and group * Kg + m is the filter k.
  const I k = i / cols;
  I c, r, s;
  g.crs(i % cols, c, r, s);
  dw[k * g.ws[0] + c * g.ws[1] + r * g.ws[2] + s * g.ws[3]] = from_float<T>(sum);
}

}  // namespace fastcnn::cuda
