// Global-average-pooling sums for avx2 (see cpu/global_avg_pool2d_simd.h).
#include "cpu/avx2/pool_vec.h"
// The kernel bodies use PoolVec<T> from the header above.
#include "cpu/global_avg_pool2d_simd.h"

namespace fastcnn::cpu {
GapKernelSet global_avg_pool2d_kernels_avx2() {
  return {global_avg_pool2d_kernels_for<float>(), global_avg_pool2d_kernels_for<double>()};
}
}  // namespace fastcnn::cpu
