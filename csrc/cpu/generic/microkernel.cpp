// Portable micro-kernel (any CPU; SSE2 registers on x86-64 baseline builds).
#include "cpu/microkernel_impl.h"

namespace fastcnn::cpu {
MicroKernels microkernels_generic() {
  return make_microkernels<4, 8, 4, 4>("generic");
}
}  // namespace fastcnn::cpu
