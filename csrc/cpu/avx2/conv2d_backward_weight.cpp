#include "cpu/conv2d_backward_weight_impl.h"

namespace fastcnn::cpu {
DotKernels dot_kernels_avx2() {
  return make_dot_kernels<32, 4, 3>();
}
}  // namespace fastcnn::cpu
