#include "cpu/conv2d_depthwise_impl.h"

namespace fastcnn::cpu {
DepthwiseKernelSet depthwise_kernels_avx512() {
  return make_depthwise_kernels();
}
}  // namespace fastcnn::cpu
