#include "cpu/conv2d_backward_weight_impl.h"
#include "cpu/conv2d_backward_weight_nhwc_impl.h"

namespace fastcnn::cpu {
DotKernels dot_kernels_avx2() {
  return make_dot_kernels<32, 4, 3>();
}
OuterKernels outer_kernels_avx2() {
  return make_outer_kernels<32, 2, 6>();
}
}  // namespace fastcnn::cpu
