// AVX-512: 32 zmm registers; 8 x 32 floats = 16 accumulators.
#include "cpu/microkernel_impl.h"

namespace fastcnn::cpu {
MicroKernels microkernels_avx512() {
  return make_microkernels<8, 32, 8, 16>("avx512");
}
}  // namespace fastcnn::cpu
