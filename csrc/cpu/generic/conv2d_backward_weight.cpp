#include "cpu/conv2d_backward_weight_impl.h"
#include "cpu/conv2d_backward_weight_nhwc_impl.h"

namespace fastcnn::cpu {
DotKernels dot_kernels_generic() {
  return make_dot_kernels<16, 2, 4>();
}
OuterKernels outer_kernels_generic() {
  return make_outer_kernels<16, 2, 6>();
}
}  // namespace fastcnn::cpu
