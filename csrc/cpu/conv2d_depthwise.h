// Direct convolution for one input channel per group (depthwise, with any channel
// multiplier K/C, and single-channel inputs): a GEMM would have a reduction of only R*S.
#pragma once

#include "cpu/conv2d_geom.h"

namespace fastcnn::cpu {

// Workspace elements: the weights as [R*S][K] (NHWC loops) or per-tap accumulators.
inline int64_t depthwise_workspace_elems(const ConvGeom& g) {
  return g.RS() * g.K;
}

template <typename T>
void depthwise_forward(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, bool relu,
                       T* ws, int threads);
template <typename T>
void depthwise_backward_input(const ConvGeom& g, const T* dy, const T* w, T* dx, T* ws,
                              int threads);
template <typename T>
void depthwise_backward_weight(const ConvGeom& g, const T* dy, const T* x, T* dw, T* ws,
                               int threads);

}  // namespace fastcnn::cpu
