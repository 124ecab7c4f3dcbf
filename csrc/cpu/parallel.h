// Static partition of [0, n) over at most `threads` threads. The partition depends only on
// n and the thread count, so results are reproducible for a given thread count.
#pragma once

#include <algorithm>
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastcnn::cpu {

// f(thread_id, begin, end) runs once per thread on a contiguous slice, with thread_id below
// `threads`. f must not throw. The slices are cut for the team OpenMP actually starts, which
// can be smaller than asked (OMP_THREAD_LIMIT, OMP_DYNAMIC, a call from inside a parallel
// region): every index still runs exactly once.
template <typename F>
void parallel_for(int64_t n, int threads, const F& f) {
  if (n <= 0) return;
  const int want = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n)));
#ifdef _OPENMP
  if (want > 1) {
#pragma omp parallel num_threads(want)
    {
      const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t chunk = n / nt, extra = n % nt;
      const int64_t begin = tid * chunk + std::min<int64_t>(tid, extra);
      const int64_t end = begin + chunk + (tid < extra ? 1 : 0);
      f(tid, begin, end);
    }
    return;
  }
#endif
  f(0, int64_t{0}, n);
}

inline int64_t ceil_div(int64_t x, int64_t m) {
  return (x + m - 1) / m;
}
inline int64_t round_up(int64_t x, int64_t m) {
  return ceil_div(x, m) * m;
}

// Threads worth using for `work` units of roughly `grain` cost each.
inline int threads_for(int64_t work, int64_t grain, int threads) {
  return static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(threads, work / std::max<int64_t>(grain, 1))));
}

}  // namespace fastcnn::cpu
