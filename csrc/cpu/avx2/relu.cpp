// ReLU kernels for avx2 (see cpu/relu_simd.h).
#include "cpu/relu_simd.h"

namespace fastcnn::cpu {
ReluKernelSet relu_kernels_avx2() {
  return {relu_kernels_for<float>(), relu_kernels_for<double>()};
}
}  // namespace fastcnn::cpu
