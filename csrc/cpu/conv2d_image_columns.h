// The forward GEMM's B operand packed from NCHW images (implicit im2col), compiled per ISA:
// rows (c, r, s) of one group, columns output positions [p0, p0 + ncols), as panels of nr
// columns, [kc][nr] each, kc * nr apart (conv2d_image_columns_impl.h).
#pragma once

#include <cstdint>

#include "cpu/conv2d_geom.h"

namespace fastcnn::cpu {

template <typename T>
struct ImageColumns {
  const ConvGeom& g;
  const T* x;  // image n, first channel of the group
  int64_t p0, ncols;
  int nr;
};

template <typename T>
using PackImageColumnsFn = void (*)(const ImageColumns<T>& cols, int64_t k0, int64_t kc, T* dst);

struct ImageColumnKernelSet {
  PackImageColumnsFn<float> f32;
  PackImageColumnsFn<double> f64;
};

ImageColumnKernelSet image_column_kernels_generic();
#if defined(FASTCNN_X86)
ImageColumnKernelSet image_column_kernels_avx2();
ImageColumnKernelSet image_column_kernels_avx512();
#endif

// The set for the ISA the micro-kernels use (FASTCNN_ISA narrows both alike).
const ImageColumnKernelSet& image_column_kernels();

}  // namespace fastcnn::cpu
