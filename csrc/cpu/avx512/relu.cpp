// ReLU kernels for avx512 (see cpu/relu_simd.h).
#include "cpu/relu_simd.h"

namespace fastcnn::cpu {
ReluKernelSet relu_kernels_avx512() {
  return {relu_kernels_for<float>(), relu_kernels_for<double>()};
}
}  // namespace fastcnn::cpu
