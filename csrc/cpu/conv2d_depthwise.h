// Direct convolution for one input channel per group (depthwise, with any channel
// multiplier K/C, and single-channel inputs): a GEMM would have a reduction of only R*S.
#pragma once

#include <cstdint>

#include "cpu/conv2d_geom.h"

namespace fastcnn::cpu {

// The vectorized kernels (conv2d_depthwise_impl.h, compiled per ISA) run on the ISA's vectors,
// at most this wide; their applicability and the workspace are reckoned at this width, so
// they do not depend on the ISA.
constexpr int kDepthwiseVecBytes = 64;
constexpr int64_t kDepthwiseMaxTaps = 64;
// The NCHW kernels stage padded input rows in a stack buffer of this size.
constexpr int64_t kDepthwiseRingBytes = 32 * 1024;
// NHWC backward-weight: output rows per tile whose dY rows take about this much (plus the input
// rows under them), so that every channel block's pass over a tile reads it from L1 and L2
// (DW, 56 pixels of 256 channels a row: one row a tile; 16 KB to 64 KB measured alike, 256 KB
// 20 % and 1 MB 30 % slower).
constexpr int64_t kDepthwiseTileBytes = 64 * 1024;

// Workspace elements: the weights as [R*S][K] (NHWC loops) or per-tap sums, the NHWC vector
// kernels' per channel block (K rounded up to a vector: the last block overlaps).
inline int64_t depthwise_workspace_elems(const ConvGeom& g) {
  constexpr int64_t float_lanes = kDepthwiseVecBytes / sizeof(float);  // the most of any dtype
  return g.RS() * ((g.K + float_lanes - 1) / float_lanes * float_lanes);
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

// Padded rows one output row reads plus the sh rows the next one adds, and the length of one
// column phase of a padded row (a vector read past the last output column stays inside it).
// The ring is filled one output row ahead: read right after they were written, the new row's
// loads failed store forwarding (DW NCHW forward: a third of the kernel's samples on one of
// them; forward 1.03-1.10x, gradients 1.05-1.07x with the row ahead).
inline int64_t depthwise_ring_rows(const ConvGeom& g) {
  return (g.R - 1) * g.dh + 1 + g.sh;
}
inline int64_t depthwise_phase_len(const ConvGeom& g, int64_t lanes) {
  return (g.W + 2 * g.pw + g.sw - 1) / g.sw + lanes;
}

template <typename T>
struct DepthwiseKernels {
  // Elements of T in nhwc_weight_blocks' channel block.
  int64_t lanes;
  // NCHW, output rows unit-stride: the Kg output planes of input channel c of one image
  // (y_image points at the image), bias and ReLU applied.
  void (*nchw_forward_plane)(const ConvGeom& g, const T* plane, const T* w, const T* bias,
                             T* y_image, int64_t c, bool relu);
  // NCHW, output rows unit-stride: dw[r * S + s] of filter k, summed over the batch.
  void (*nchw_weight_filter)(const ConvGeom& g, const T* dy, const T* x, int64_t k, T* dw);
  // NHWC, multiplier 1, K >= the lanes of a kDepthwiseVecBytes vector: output row oh of one image
  // (y_row points at it); wt holds the taps as [R*S][K].
  void (*nhwc_forward_row)(const ConvGeom& g, const T* x_image, const T* wt, const T* bias,
                           T* y_row, int64_t oh, bool relu);
  // NHWC, multiplier 1, K >= lanes: the batch's sums for the channel blocks [b0, b1) (block b:
  // channels from min(b * lanes, K - lanes)), stored as acc[(b * R*S + rs) * lanes + lane].
  void (*nhwc_weight_blocks)(const ConvGeom& g, const T* dy, const T* x, int64_t b0, int64_t b1,
                             T* acc);
};

struct DepthwiseKernelSet {
  DepthwiseKernels<float> f32;
  DepthwiseKernels<double> f64;
};

DepthwiseKernelSet depthwise_kernels_generic();
#if defined(FASTCNN_X86)
DepthwiseKernelSet depthwise_kernels_avx2();
DepthwiseKernelSet depthwise_kernels_avx512();
#endif

}  // namespace fastcnn::cpu
