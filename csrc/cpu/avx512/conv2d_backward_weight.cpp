#include "cpu/conv2d_backward_weight_impl.h"

namespace fastcnn::cpu {
DotKernels dot_kernels_avx512() {
  return make_dot_kernels<64, 4, 6>();
}
}  // namespace fastcnn::cpu
