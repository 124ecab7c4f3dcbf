// Direct convolution kernels, for layers whose GEMM would waste its tiles: one input channel
// per group (depthwise, and single-channel inputs) for all three passes, and few channels per
// group (stems) for backward-input, whose GEMM has only C/groups rows. Each output, or
// input-gradient, element sums its own taps, and each filter tap's weight gradient is one
// block's fixed-order reduction. These layers are memory-bound or nearly so, so CUDA cores in
// float suffice; no atomics, no workspace. Filter k reads input channels of group k / Kg
// (Kg = K / groups filters per group).
#pragma once

#include "cuda/common.cuh"
#include "cuda/conv2d_ops.cuh"

namespace fastcnn::cuda {

template <typename T, typename I>
FASTCNN_HD float depthwise_output(const T* __restrict__ x, const T* __restrict__ w,
                                  const ConvGeom<I>& g, I n, I k, I oh, I ow) {
  const T* plane = x + n * g.xs[0] + k / g.Kg * g.xs[1];
  const T* taps = w + k * g.ws[0];
  float acc = 0.f;
  for (I r = 0; r < g.R; ++r) {
    const I ih = oh * g.sh - g.ph + r * g.dh;
    if (ih < 0 || ih >= g.H) continue;
    for (I s = 0; s < g.S; ++s) {
      const I iw = ow * g.sw - g.pw + s * g.dw;
      if (iw < 0 || iw >= g.W) continue;
      acc +=
          to_float(taps[r * g.ws[2] + s * g.ws[3]]) * to_float(plane[ih * g.xs[2] + iw * g.xs[3]]);
    }
  }
  return acc;
}

// dX[n, c, h, w]: the taps of the group's Kg filters whose windows put them on (h, w).
template <typename T, typename I>
FASTCNN_HD float direct_input_grad(const T* __restrict__ dy, const T* __restrict__ w,
                                   const ConvGeom<I>& g, I n, I c, I h, I wc) {
  const I grp = c / g.Cg;
  const T* taps = w + c % g.Cg * g.ws[1];  // channel c's weights within each filter
  float acc = 0.f;
  for (I k = grp * g.Kg; k < (grp + 1) * g.Kg; ++k) {
    for (I r = 0; r < g.R; ++r) {
      const I th = h + g.ph - r * g.dh;  // oh * sh of the window whose tap r is h
      if (th < 0) break;
      if (th % g.sh != 0 || th / g.sh >= g.Ho) continue;
      for (I s = 0; s < g.S; ++s) {
        const I tw = wc + g.pw - s * g.dw;
        if (tw < 0) break;
        if (tw % g.sw != 0 || tw / g.sw >= g.Wo) continue;
        acc += to_float(dy[n * g.ys[0] + k * g.ys[1] + th / g.sh * g.ys[2] + tw / g.sw * g.ys[3]]) *
               to_float(taps[k * g.ws[0] + r * g.ws[2] + s * g.ws[3]]);
      }
    }
  }
  return acc;
}

// One term of dW[k, 0, r, s]: output position q = (n, oh, ow).
template <typename T, typename I>
FASTCNN_HD float depthwise_weight_term(const T* __restrict__ dy, const T* __restrict__ x,
                                       const ConvGeom<I>& g, I k, I r, I s, I q) {
  I n, oh, ow;
  g.nhw(q, n, oh, ow);
  const I ih = oh * g.sh - g.ph + r * g.dh, iw = ow * g.sw - g.pw + s * g.dw;
  if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) return 0.f;
  return to_float(dy[n * g.ys[0] + k * g.ys[1] + oh * g.ys[2] + ow * g.ys[3]]) *
         to_float(x[n * g.xs[0] + k / g.Kg * g.xs[1] + ih * g.xs[2] + iw * g.xs[3]]);
}

template <typename T, typename I>
__global__ void depthwise_forward(const T* __restrict__ x, const T* __restrict__ w,
                                  const T* __restrict__ bias, T* __restrict__ y, ConvGeom<I> g,
                                  bool relu) {
  const I total = g.N * g.K * g.P();
  const I step = static_cast<I>(gridDim.x) * blockDim.x;
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const Coords<I> o = coords_of<I>(i, g.K, g.Ho, g.Wo, g.y_cl);
    float v = depthwise_output(x, w, g, o.n, o.c, o.h, o.w);
    if (bias) v += to_float(bias[o.c]);
    if (relu) v = v < 0.f ? 0.f : v;  // NaN passes, as in torch.relu
    y[i] = from_float<T>(v);
  }
}

template <typename T, typename I>
__global__ void direct_backward_input(const T* __restrict__ dy, const T* __restrict__ w,
                                      T* __restrict__ dx, ConvGeom<I> g) {
  const I total = g.N * g.C * g.H * g.W;
  const I step = static_cast<I>(gridDim.x) * blockDim.x;
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const Coords<I> in = coords_of<I>(i, g.C, g.H, g.W, g.x_cl);
    dx[i] = from_float<T>(direct_input_grad(dy, w, g, in.n, in.c, in.h, in.w));
  }
}

// Weight gradient, NCHW grad_output: block (k, tap); 256 threads stride over positions
// (coalesced along a plane), then a fixed-order tree in shared memory.
template <typename T, typename I>
__global__ void depthwise_backward_weight_planes(const T* __restrict__ dy, const T* __restrict__ x,
                                                 T* __restrict__ dw, ConvGeom<I> g) {
  __shared__ float partial[256];
  const I k = blockIdx.x, r = blockIdx.y / g.S, s = blockIdx.y % g.S;
  float sum = 0.f;
  for (I q = threadIdx.x; q < g.N * g.P(); q += blockDim.x)
    sum += depthwise_weight_term(dy, x, g, k, r, s, q);
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) dw[k * g.ws[0] + r * g.ws[2] + s * g.ws[3]] = from_float<T>(partial[0]);
}

// Weight gradient, NHWC grad_output: block (32 filters, tap, slice of `chunk` positions);
// the 32 lanes run along the filters (coalesced), 8 rows stride over the slice, then a
// fixed-order sum of the rows goes to dW, or with several slices to the slice's partial sums
// [slice][K][R * S], which reduce_slices adds in slice order.
template <typename T, typename I>
__global__ void depthwise_backward_weight_channels(const T* __restrict__ dy,
                                                   const T* __restrict__ x, T* __restrict__ dw,
                                                   float* __restrict__ partial, ConvGeom<I> g,
                                                   I chunk) {
  __shared__ float rows[8][32];
  const I k = static_cast<I>(blockIdx.x) * 32 + threadIdx.x;
  const I r = blockIdx.y / g.S, s = blockIdx.y % g.S;
  const I begin = static_cast<I>(blockIdx.z) * chunk, depth = g.N * g.P();
  const I end = depth - begin < chunk ? depth : begin + chunk;
  float sum = 0.f;
  if (k < g.K)
    for (I q = begin + threadIdx.y; q < end; q += 8)
      sum += depthwise_weight_term(dy, x, g, k, r, s, q);
  rows[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && k < g.K) {
    float total = 0.f;
    for (int row = 0; row < 8; ++row) total += rows[row][threadIdx.x];
    if (partial)
      partial[(static_cast<I>(blockIdx.z) * g.K + k) * g.RS() + blockIdx.y] = total;
    else
      dw[k * g.ws[0] + r * g.ws[2] + s * g.ws[3]] = from_float<T>(total);
  }
}

}  // namespace fastcnn::cuda
