#include <cstddef>
#include <cstdint>

#include "fastcnn/ops.h"

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace fastcnn::cpu {

bool advise_huge_pages(std::uintptr_t address, size_t nbytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  // Only whole 2 MiB pages inside the block: the ragged ends may share a huge page with
  // other allocations, which the advice must not touch.
  constexpr std::uintptr_t huge = std::uintptr_t{1} << 21;
  const std::uintptr_t begin = (address + huge - 1) & ~(huge - 1);
  const std::uintptr_t end = (address + nbytes) & ~(huge - 1);
  if (end <= begin) return false;
  // EINVAL where the kernel has no transparent huge pages: the memory stays as it was.
  return madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE) == 0;
#else
  (void)address;
  (void)nbytes;
  return false;
#endif
}

}  // namespace fastcnn::cpu
