#include "cpu/conv2d_backward_weight_impl.h"

namespace fastcnn::cpu {
DotKernels dot_kernels_generic() {
  return make_dot_kernels<16, 2, 4>();
}
}  // namespace fastcnn::cpu
