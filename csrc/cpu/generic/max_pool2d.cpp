// Max-pooling row kernels for generic (see cpu/max_pool2d_simd.h).
#include "cpu/generic/pool_vec.h"
// The kernel bodies use PoolVec<T> from the header above.
#include "cpu/max_pool2d_simd.h"

namespace fastcnn::cpu {
MaxPoolKernelSet max_pool2d_kernels_generic() {
  return {max_pool2d_kernels_for<float>(), max_pool2d_kernels_for<double>()};
}
}  // namespace fastcnn::cpu
