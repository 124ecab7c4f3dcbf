// The forward image packer for avx512 (see cpu/conv2d_image_columns_impl.h).
#include "cpu/conv2d_image_columns_impl.h"

namespace fastcnn::cpu {
ImageColumnKernelSet image_column_kernels_avx512() {
  return {pack_image_columns<float>, pack_image_columns<double>};
}
}  // namespace fastcnn::cpu
