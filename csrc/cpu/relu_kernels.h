// ReLU kernels per ISA, one implementation per translation unit
// (cpu/{generic,avx2,avx512}/relu.cpp), picked with the micro-kernels' ISA. The driver
// (relu.cpp) checks the tensors and splits the elements over threads; a kernel maps one
// contiguous range.
#pragma once

#include <cstdint>

namespace fastcnn::cpu {

template <typename T>
struct ReluKernels {
  // out[i] = relu(in[i]) for i < n. streamed: non-temporal stores, fenced before returning.
  void (*forward)(int64_t n, const T* in, T* out, bool streamed);
  // dx[i] = dy[i] where y[i] > 0 or is NaN, else 0; guided: 0 also where dy[i] < 0.
  void (*backward)(int64_t n, const T* dy, const T* y, T* dx, bool guided, bool streamed);
};

struct ReluKernelSet {
  ReluKernels<float> f32;
  ReluKernels<double> f64;
};

ReluKernelSet relu_kernels_generic();
#if defined(FASTCNN_X86)
ReluKernelSet relu_kernels_avx2();
ReluKernelSet relu_kernels_avx512();
#endif

// The set for the ISA the micro-kernels use (FASTCNN_ISA narrows both alike).
const ReluKernelSet& relu_kernels();

}  // namespace fastcnn::cpu
