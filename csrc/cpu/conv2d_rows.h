// Forward convolution of images with few channels (the 3-channel stem) as rows of output
// positions: no im2col. A tile of 8 consecutive positions of one output row times 32 filters
// accumulates, over segments, runs of an input row: for position i and reduction step t the
// value is row[i * step + t], with step = stride * channels (NHWC: a segment is a kernel row,
// its run the S x C values of that row's window) or stride (NCHW: a segment is a (channel,
// kernel row) pair, its run the S values). Each value is broadcast straight from the
// zero-padded copy of the input row, so the short channel runs that make im2col packing the
// cost of a GEMM stem are never gathered.
#pragma once

#include <cstdint>

#include "cpu/conv2d_geom.h"

namespace fastcnn::cpu {

constexpr int kRowsMR = 8;   // positions per tile
constexpr int kRowsNR = 32;  // filters per tile
constexpr int kRowsMaxSegments = 64;

// Where a finished tile goes: out[i][j] (+ bias[j], then ReLU) lands at
// y[j * filter_stride + i * position_stride] for i < rows, j < cols.
struct RowsStore {
  float* y;
  int64_t filter_stride, position_stride;
  int rows, cols;
  const float* bias;  // null: none
  bool relu;
};

struct RowsKernel {
  // out[i][j] = sum over segments s < segs and t < len of rows[s][i * step + t] * w[s][t][j],
  // i < kRowsMR, j < kRowsNR, stored through st; w holds segs * len * kRowsNR floats.
  void (*tile)(int64_t segs, const float* const* rows, int64_t len, int64_t step, const float* w,
               const RowsStore& st);
};

RowsKernel rows_kernel_generic();
#if defined(FASTCNN_X86)
RowsKernel rows_kernel_avx2();
RowsKernel rows_kernel_avx512();
#endif
// The tile built for the same ISA as the micro-kernel in use.
const RowsKernel& rows_kernel();

// True when this forward convolution takes the rows path: float32, one group, no dilation,
// at most 4 input channels, a window of at least 64 taps (R x S x C) and at most
// kRowsMaxSegments (channel, kernel row) pairs.
bool rows_applies(const ConvGeom& g, bool float32);
int64_t rows_workspace_elems(const ConvGeom& g, int threads);
void rows_forward(const ConvGeom& g, const float* x, const float* w, const float* bias, float* y,
                  bool relu, float* ws, int threads);

}  // namespace fastcnn::cpu
