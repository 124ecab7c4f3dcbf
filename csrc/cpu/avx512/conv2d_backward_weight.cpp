#include "cpu/conv2d_backward_weight_impl.h"
#include "cpu/conv2d_backward_weight_nhwc_impl.h"

namespace fastcnn::cpu {
DotKernels dot_kernels_avx512() {
  return make_dot_kernels<64, 4, 6>();
}
OuterKernels outer_kernels_avx512() {
  return make_outer_kernels<64, 2, 14>();
}
}  // namespace fastcnn::cpu
