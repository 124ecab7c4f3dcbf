#include <cstdlib>
#include <cstring>

#include "cpu/microkernel.h"
#include "fastcnn/ops.h"

namespace fastcnn::cpu {
namespace {

bool allowed(const char* isa) {
  const char* want = std::getenv("FASTCNN_ISA");
  if (want == nullptr || *want == '\0') return true;
  // A requested ISA caps the choice: "avx2" allows avx2 and generic, "generic" only generic.
  static const char* order[] = {"generic", "avx2", "avx512"};
  int want_rank = -1, isa_rank = -1;
  for (int i = 0; i < 3; ++i) {
    if (std::strcmp(want, order[i]) == 0) want_rank = i;
    if (std::strcmp(isa, order[i]) == 0) isa_rank = i;
  }
  return want_rank < 0 || isa_rank <= want_rank;
}

MicroKernels choose() {
#if defined(FASTCNN_X86)
  __builtin_cpu_init();
  if (allowed("avx512") && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bw"))
    return microkernels_avx512();
  if (allowed("avx2") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return microkernels_avx2();
#endif
  return microkernels_generic();
}

}  // namespace

const MicroKernels& microkernels() {
  static const MicroKernels chosen = choose();
  return chosen;
}

const char* isa() {
  return microkernels().isa;
}

}  // namespace fastcnn::cpu
