// A blocked GEMM driver over packed panels: C[M x ncols] = A[M x K] * B[K x ncols].
//
// The caller supplies how panels are made and where results go:
//   pack_a(k0, kc) -> Panels      panels of mr rows, [kc][mr] each, `stride` apart
//   pack_b(k0, kc, bbuf) -> Panels
//                                 ceil(ncols / nr) panels of [kc][nr], `stride` apart: packed
//                                 into bbuf, or pointing into operands packed beforehand
//   tile(kc, a, b, m0, n0, rows, cols, first, last)
//                                 multiplies panel a by panel b (a micro-kernel call) and
//                                 stores the rows x cols tile at (m0, n0); `first`: this is
//                                 the first reduction block (overwrite), `last`: the final
//                                 one (epilogue)
//   tile.row_runs()               whether the tile's rows land as runs of adjacent elements,
//                                 each tile on elements of its own (then the order in which
//                                 tiles run cannot change a result)
// This lets a convolution pack B straight from the image (implicit im2col), without an
// im2col buffer, and fuse bias and ReLU into the final store.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu/microkernel.h"
#include "cpu/parallel.h"

namespace fastcnn::cpu {

constexpr int64_t kBlockK = 512;  // reduction block: a B panel (kc x nr) stays in L1/L2
constexpr int64_t kBlockN = 512;  // columns per task; a multiple of every micro-kernel nr
// Reductions this short go row panel by row panel where tiles land as row runs (below).
constexpr int64_t kShortK = 128;
constexpr int kMaxMR = 8;
constexpr int kMaxNR = 32;

template <typename T>
struct Panels {
  const T* data;
  int64_t stride;  // elements between consecutive panels
};

// Runs row panels [panel_begin, panel_end) against all columns, reduction [k_begin, k_end).
template <typename T, typename PackA, typename PackB, typename Tile>
void gemm_blocked(const MicroKernel<T>& mk, int64_t M, int64_t ncols, int64_t k_begin,
                  int64_t k_end, int64_t panel_begin, int64_t panel_end, const PackA& pack_a,
                  const PackB& pack_b, T* bbuf, const Tile& tile) {
  const int mr = mk.mr, nr = mk.nr;
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kBlockK) {
    const int64_t kc = std::min(kBlockK, k_end - k0);
    const Panels<T> a = pack_a(k0, kc);
    const Panels<T> bp = pack_b(k0, kc, bbuf);
    const bool first = k0 == k_begin, last = k0 + kc >= k_end;
    auto run = [&](int64_t i, int64_t n0) {
      const int rows = static_cast<int>(std::min<int64_t>(mr, M - i * mr));
      const int cols = static_cast<int>(std::min<int64_t>(nr, ncols - n0));
      tile(kc, a.data + i * a.stride, bp.data + n0 / nr * bp.stride, i * mr, n0, rows, cols, first,
           last);
    };
    if (k_end - k_begin <= kShortK && tile.row_runs()) {
      // Short reductions are bound by the tiles' stores: where a tile's rows are runs in
      // memory, a row panel's tiles side by side write its rows' lines in order (a column of
      // tiles wrote two lines of each of M rows, each row a whole row of C apart).
      for (int64_t i = panel_begin; i < panel_end; ++i)
        for (int64_t n0 = 0; n0 < ncols; n0 += nr) run(i, n0);
    } else {
      for (int64_t n0 = 0; n0 < ncols; n0 += nr)
        for (int64_t i = panel_begin; i < panel_end; ++i) run(i, n0);
    }
  }
}

// Packs rows [0, M) x reduction [0, K) of the matrix base[row_off(m) + col_off(k)] into
// mr-row panels, [panel][k][mr], zero-padding the last panel. Used for weights, packed once
// per call (as A panels of mr rows, or as B panels of nr columns). Each offset is computed
// once per panel (rows) or per panel and k (columns), not per element: they divide.
template <typename T, typename RowOff, typename ColOff>
void pack_a_full(int64_t M, int64_t K, int mr, const T* base, const RowOff& row_off,
                 const ColOff& col_off, T* dst) {
  int64_t rows_at[kMaxNR];
  for (int64_t i0 = 0; i0 < M; i0 += mr) {
    const int rows = static_cast<int>(std::min<int64_t>(mr, M - i0));
    for (int ii = 0; ii < rows; ++ii) rows_at[ii] = row_off(i0 + ii);
    T* panel = dst + i0 * K;
    for (int64_t k = 0; k < K; ++k, panel += mr) {
      const T* col = base + col_off(k);
      for (int ii = 0; ii < rows; ++ii) panel[ii] = col[rows_at[ii]];
      for (int ii = rows; ii < mr; ++ii) panel[ii] = T(0);
    }
  }
}

}  // namespace fastcnn::cpu
