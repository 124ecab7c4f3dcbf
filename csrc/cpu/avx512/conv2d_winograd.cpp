#include "cpu/conv2d_winograd_impl.h"

namespace fastcnn::cpu {
WinogradTransforms winograd_transforms_avx512() {
  return make_winograd_transforms();
}
}  // namespace fastcnn::cpu
