#include "cpu/conv2d_depthwise_impl.h"

namespace fastcnn::cpu {
DepthwiseKernelSet depthwise_kernels_generic() {
  return make_depthwise_kernels();
}
}  // namespace fastcnn::cpu
