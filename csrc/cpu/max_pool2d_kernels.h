// Max-pooling kernels per ISA. The portable driver (max_pool2d.cpp) splits the work over
// threads and output rows; these compute one output row at a time with SIMD across the
// outputs of the row (NCHW) or across channels (NHWC). One implementation per ISA, each in its
// own translation unit (cpu/{generic,avx2,avx512}/max_pool2d.cpp), picked with the conv
// micro-kernels' ISA.
//
// Semantics, as torch: a window's value is its first maximum in window order (rows, then
// columns), and a NaN wins over any number, the last NaN in window order giving the index.
// Indices are flat (h * W + w) in each plane; -1 marks a window with no input element.
#pragma once

#include <cstdint>

#include "fastcnn/ops.h"

namespace fastcnn::cpu {

// The windows of one output row: the input rows they cover that lie inside the input
// (first_row + i * row_step for i in [0, rows)), and the geometry along W.
struct RowWindows {
  int64_t first_row, rows, row_step;
  int64_t kernel, stride, pad, dilation;
  int64_t W;
  bool prefetch;  // the NCHW kernels ask for rows ahead: the input is too large to stay cached
};

// One NCHW plane pooled by 3x3 windows with stride 2 and no dilation (the ResNet stem's
// pool), padding 0 or 1 per dimension. The backward takes at most kMaxRow3x3 outputs a row.
struct Plane3x3s2 {
  int64_t H, W, Ho, Wo, pad_h, pad_w;
  bool prefetch;  // as RowWindows::prefetch
};
constexpr int64_t kMaxRow3x3 = kMaxPoolOffsetsRow;

template <typename T>
struct MaxPoolKernels {
  // NCHW: outputs ow in [ow0, ow1) of one row of one plane (row stride W, column stride 1).
  // y[ow - ow0] and idx[ow - ow0]; idx may be null.
  void (*nchw_row)(const T* plane, const RowWindows& g, int64_t ow0, int64_t ow1, T* y,
                   int64_t* idx);
  // NCHW backward with the argmax recomputed from the plane: dx[argmax] += dy[ow] for the
  // outputs ow in [0, Wo) of one row; dx points at the plane of the gradient.
  void (*nchw_row_backward)(const T* plane, const RowWindows& g, int64_t Wo, const T* dy, T* dx);
  // NHWC: outputs ow in [0, Wo), channels [c0, c1) of one row of one image (pixel stride C).
  // y and idx point at the output row, whose pixels are out_stride apart; idx may be null.
  void (*nhwc_row)(const T* image, const RowWindows& g, int64_t C, int64_t c0, int64_t c1,
                   int64_t Wo, int64_t out_stride, T* y, int64_t* idx);
  // NHWC backward with the argmax recomputed from the image: dx[argmax] += dy for each output
  // of the row, channels [c0, c1). dy points at the output row (pixels out_stride apart).
  // tiles: the windows cover every pixel of the image exactly once, and the row's pixels of
  // dx are stored (the gradient or 0) instead of added to.
  void (*nhwc_row_backward)(const T* image, const RowWindows& g, int64_t C, int64_t c0, int64_t c1,
                            int64_t Wo, int64_t out_stride, const T* dy, T* dx, bool tiles);
  // NCHW, 2x2 stride-2 windows without padding or dilation, one output row of a plane whose
  // rows are W elements long: x points at the row pair the windows cover. The forward writes
  // y[0, Wo) and, when offsets is not null, each window's argmax tap there (row-major, 0-3).
  // The backward takes the argmax from offsets when given (false if one is no tap), else
  // recomputes it from x, and writes both rows of dx whole, columns [0, W).
  void (*nchw_row_2x2)(const T* x, int64_t W, int64_t Wo, T* y, uint8_t* offsets);
  bool (*nchw_row_backward_2x2)(const T* x, const uint8_t* offsets, int64_t W, int64_t Wo,
                                const T* dy, T* dx);
  // Plane3x3s2: the forward of output row oh (y[0, Wo)) with each window's argmax tap
  // (r * 3 + s within the whole window) in offsets; the backward of a plane with the argmax
  // from offsets (rows dy_row apart, as dy's; false if one is no tap inside the input) or,
  // with null offsets, recomputed from x. It writes every element of dx (rows W apart) once.
  void (*nchw_row_3x3s2)(const T* plane, const Plane3x3s2& g, int64_t oh, T* y, uint8_t* offsets);
  bool (*nchw_plane_backward_3x3s2)(const T* x, const uint8_t* offsets, const Plane3x3s2& g,
                                    const T* dy, int64_t dy_row, T* dx);
};

struct MaxPoolKernelSet {
  MaxPoolKernels<float> f32;
  MaxPoolKernels<double> f64;
};

MaxPoolKernelSet max_pool2d_kernels_generic();
#if defined(FASTCNN_X86)
MaxPoolKernelSet max_pool2d_kernels_avx2();
MaxPoolKernelSet max_pool2d_kernels_avx512();
#endif

// The set for the ISA the micro-kernels use (FASTCNN_ISA narrows both alike).
const MaxPoolKernelSet& max_pool2d_kernels();

}  // namespace fastcnn::cpu
