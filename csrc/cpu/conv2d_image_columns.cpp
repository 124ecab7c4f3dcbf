// The image packer of the ISA the micro-kernels use.
#include "cpu/conv2d_image_columns.h"

#include "cpu/isa_select.h"

namespace fastcnn::cpu {

const ImageColumnKernelSet& image_column_kernels() {
  static const ImageColumnKernelSet chosen = FASTCNN_FOR_CHOSEN_ISA(image_column_kernels);
  return chosen;
}

}  // namespace fastcnn::cpu
