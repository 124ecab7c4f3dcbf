#include "cpu/conv2d_stem_winograd_impl.h"

namespace fastcnn::cpu {
RowsKernel rows_kernel_avx512() {
  return make_rows_kernel();
}
StemTransforms stem_transforms_avx512() {
  return make_stem_transforms();
}
}  // namespace fastcnn::cpu
