// The forward image packer for generic (see cpu/conv2d_image_columns_impl.h).
#include "cpu/conv2d_image_columns_impl.h"

namespace fastcnn::cpu {
ImageColumnKernelSet image_column_kernels_generic() {
  return {{pack_image_columns<float>, stage_row_windows<float>},
          {pack_image_columns<double>, stage_row_windows<double>}};
}
}  // namespace fastcnn::cpu
