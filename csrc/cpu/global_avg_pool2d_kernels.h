// Global-average-pooling sums per ISA, one implementation per translation unit
// (cpu/{generic,avx2,avx512}/global_avg_pool2d.cpp), picked with the micro-kernels' ISA.
// Sums are kept in double (runs of up to 4 vectors are added in the input type first).
#pragma once

#include <cstdint>

namespace fastcnn::cpu {

template <typename T>
struct GapKernels {
  // NCHW: y[p] = scale * sum(x[p * hw .. (p + 1) * hw)) for p in [0, planes).
  void (*sum_planes)(const T* x, int64_t planes, int64_t hw, double scale, T* y);
  // NHWC, one image: y[c] = scale * sum over pixels i < hw of x[i * C + c], c in [c0, c1).
  void (*sum_pixels)(const T* x, int64_t hw, int64_t C, int64_t c0, int64_t c1, double scale, T* y);
};

struct GapKernelSet {
  GapKernels<float> f32;
  GapKernels<double> f64;
};

GapKernelSet global_avg_pool2d_kernels_generic();
#if defined(FASTCNN_X86)
GapKernelSet global_avg_pool2d_kernels_avx2();
GapKernelSet global_avg_pool2d_kernels_avx512();
#endif

// The set for the ISA the micro-kernels use (FASTCNN_ISA narrows both alike).
const GapKernelSet& global_avg_pool2d_kernels();

}  // namespace fastcnn::cpu
