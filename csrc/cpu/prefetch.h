// Software prefetch of a line that may lie outside the tensor being walked.
#pragma once

#include <cstdint>

namespace fastcnn::cpu {
namespace {

// Prefetches the line holding p[offset], which may lie past the run (a prefetch never faults):
// the address is computed as an integer, not as a pointer out of the run. Locality as
// __builtin_prefetch's: 3 into L1, 2 into L2.
template <int Locality = 3, typename T>
inline void prefetch_at(const T* p, int64_t offset) {
  __builtin_prefetch(
      reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(p) + offset * sizeof(T)), 0,
      Locality);
}

}  // namespace
}  // namespace fastcnn::cpu
