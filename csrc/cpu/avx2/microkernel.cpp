// AVX2 + FMA: 16 ymm registers; 6 x 16 floats = 12 accumulators.
#include "cpu/microkernel_impl.h"

namespace fastcnn::cpu {
MicroKernels microkernels_avx2() {
  return make_microkernels<6, 16, 6, 8>("avx2");
}
}  // namespace fastcnn::cpu
