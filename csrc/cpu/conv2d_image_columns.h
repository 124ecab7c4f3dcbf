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

// Row windows, for convolutions whose output rows are each one column panel (Wo == nr) and
// whose kernel rows step one input row per output row (stride and dilation 1 down the
// columns): for every input row y that output rows [p0 / Wo, (p0 + ncols) / Wo) read (from
// the first one's top tap on), channel c of the group and column tap s, the nr inputs that
// tap reads along the output row, zero in the padding:
//   dst[((y * Cg + c) * S + s) * nr + ow] = x[c, p0 / Wo - ph + y, ow * sw - pw + s * dw]
// With the reduction ordered (r, c, s), output row oh's B panel is then the window of
// R * Cg * S rows that starts at its own input row: rows nr apart, as packed panels are,
// read in place. Panels of consecutive output rows overlap, so the staging writes R times
// fewer elements than packed panels would take.
template <typename T>
using StageRowWindowsFn = void (*)(const ImageColumns<T>& cols, T* dst);

template <typename T>
struct ImageColumnKernels {
  PackImageColumnsFn<T> pack;
  StageRowWindowsFn<T> stage_row_windows;
};

struct ImageColumnKernelSet {
  ImageColumnKernels<float> f32;
  ImageColumnKernels<double> f64;
};

ImageColumnKernelSet image_column_kernels_generic();
#if defined(FASTCNN_X86)
ImageColumnKernelSet image_column_kernels_avx2();
ImageColumnKernelSet image_column_kernels_avx512();
#endif

// The set for the ISA the micro-kernels use (FASTCNN_ISA narrows both alike).
const ImageColumnKernelSet& image_column_kernels();

}  // namespace fastcnn::cpu
