#include "cpu/conv2d_rows_impl.h"

namespace fastcnn::cpu {
RowsKernel rows_kernel_generic() {
  return make_rows_kernel();
}
}  // namespace fastcnn::cpu
