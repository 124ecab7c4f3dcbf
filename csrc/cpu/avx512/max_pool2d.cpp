// Max-pooling row kernels for avx512 (see cpu/max_pool2d_simd.h).
#include "cpu/avx512/pool_vec.h"
// The kernel bodies use PoolVec<T> from the header above.
#include "cpu/max_pool2d_simd.h"

namespace fastcnn::cpu {
MaxPoolKernelSet max_pool2d_kernels_avx512() {
  return {max_pool2d_kernels_for<float>(), max_pool2d_kernels_for<double>()};
}
}  // namespace fastcnn::cpu
