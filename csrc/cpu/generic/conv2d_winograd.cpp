#include "cpu/conv2d_winograd_backward_weight_impl.h"
#include "cpu/conv2d_winograd_impl.h"

namespace fastcnn::cpu {
WinogradTransforms winograd_transforms_generic() {
  return make_winograd_transforms();
}
WinogradWeightTransforms winograd_weight_transforms_generic() {
  return make_winograd_weight_transforms();
}
}  // namespace fastcnn::cpu
