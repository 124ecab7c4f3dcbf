// Kernels written once and compiled per ISA (cpu/<isa>/*.cpp, each with its own flags): the
// set built for the ISA chosen at load (isa(); FASTCNN_ISA narrows the choice).
#pragma once

#include <string_view>
#include <type_traits>

#include "fastcnn/ops.h"

namespace fastcnn::cpu {

// The member of a kernel set for element type T: .f32 for float, .f64 for double.
template <typename T, typename Set>
const auto& for_dtype(const Set& set) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  if constexpr (std::is_same_v<T, float>)
    return set.f32;
  else
    return set.f64;
}

template <typename T>
T for_chosen_isa(T (*generic)(), T (*avx2)(), T (*avx512)()) {
  const std::string_view chosen = isa();
  if (chosen == "avx512") return avx512();
  if (chosen == "avx2") return avx2();
  return generic();
}

}  // namespace fastcnn::cpu

// The set from the factories name##_generic, name##_avx2 and name##_avx512 (the last two
// exist in x86 builds only).
#if defined(FASTCNN_X86)
#define FASTCNN_FOR_CHOSEN_ISA(name) \
  ::fastcnn::cpu::for_chosen_isa(name##_generic, name##_avx2, name##_avx512)
#else
#define FASTCNN_FOR_CHOSEN_ISA(name) name##_generic()
#endif
