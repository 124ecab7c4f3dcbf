// The block tiling shared by the two implicit-GEMM kernels: a block computes a 64 x 64 tile
// of C (one group, one reduction slice) in steps of depth 16. Each step, every one of the
// 256 threads reads 4 elements of each operand through the Op's gather functions (zero
// outside the matrix or the slice) and stores them, as float, into k-major shared tiles
// As[k][m] and Bs[k][n]. A thread's loads keep their row of A and column of B at every step.
#pragma once

#include "cuda/common.cuh"

namespace fastcnn::cuda::tiles {

constexpr int kBM = 64, kBN = 64, kBK = 16, kThreads = 256;
constexpr int kPad = 8;  // row pitch 72 floats: the tensor-core fragment reads hit 32 banks
constexpr int kLoads = kBM * kBK / kThreads;
static_assert(kBM == kBN && kLoads * kThreads == kBM * kBK, "tile loads must divide evenly");

using TileA = float[kBK][kBM + kPad];
using TileB = float[kBK][kBN + kPad];

// Tile coordinates of load t of thread tid: (index along the tile's long side, depth
// index), neighbouring threads along whichever runs along memory.
__device__ __forceinline__ void slot(int tid, int t, bool long_side_fastest, int& along,
                                     int& depth) {
  const int e = tid + t * kThreads;
  if (long_side_fastest) {
    along = e % kBM, depth = e / kBM;
  } else {
    depth = e % kBK, along = e / kBK;
  }
}

struct Identity {
  __device__ float operator()(float v) const { return v; }
};

// The row of A and column of B behind each of a thread's loads: fixed for the block, so
// resolved once (Op::row_a / col_b) rather than at every reduction step.
template <typename Op>
struct Slots {
  typename Op::RowA rows[kLoads];
  typename Op::ColB cols[kLoads];
  bool row_ok[kLoads], col_ok[kLoads];
};

template <typename Op>
__device__ __forceinline__ Slots<Op> resolve_slots(const Op& op, typename Op::Index grp,
                                                   typename Op::Index m0, typename Op::Index n0) {
  Slots<Op> sl;
#pragma unroll
  for (int t = 0; t < kLoads; ++t) {
    int mm, kk, jj, qq;
    slot(threadIdx.x, t, op.a_m_fastest(), mm, kk);
    slot(threadIdx.x, t, !op.b_q_fastest(), jj, qq);
    sl.row_ok[t] = m0 + mm < op.rows();
    sl.col_ok[t] = n0 + jj < op.cols();
    // Rows and columns past the matrix load nothing; resolve them as the first one.
    sl.rows[t] = op.row_a(grp, sl.row_ok[t] ? m0 + mm : 0);
    sl.cols[t] = op.col_b(grp, sl.col_ok[t] ? n0 + jj : 0);
  }
  return sl;
}

// One step: fetch this step's operands into registers, wait for the previous step's
// readers, store (through `round`), and wait for the stores. Every thread must call it.
template <typename Op, typename Round = Identity>
__device__ __forceinline__ void load_step(const Op& op, const Slots<Op>& sl, typename Op::Index k0,
                                          typename Op::Index k_end, TileA& As, TileB& Bs,
                                          Round round = {}) {
  const bool a_m = op.a_m_fastest(), b_q = op.b_q_fastest();
  float ra[kLoads], rb[kLoads];
#pragma unroll
  for (int t = 0; t < kLoads; ++t) {
    int mm, kk, jj, qq;
    slot(threadIdx.x, t, a_m, mm, kk);
    slot(threadIdx.x, t, !b_q, jj, qq);
    ra[t] = sl.row_ok[t] && k0 + kk < k_end ? op.a_at(sl.rows[t], k0 + kk) : 0.f;
    rb[t] = sl.col_ok[t] && k0 + qq < k_end ? op.b_at(sl.cols[t], k0 + qq) : 0.f;
  }
  __syncthreads();
#pragma unroll
  for (int t = 0; t < kLoads; ++t) {
    int mm, kk, jj, qq;
    slot(threadIdx.x, t, a_m, mm, kk);
    slot(threadIdx.x, t, !b_q, jj, qq);
    As[kk][mm] = round(ra[t]);
    Bs[qq][jj] = round(rb[t]);
  }
  __syncthreads();
}

// The block's tile origin, group and reduction range [k_begin, k_end) from its position in
// the grid (column tiles, row tiles, groups x slices).
template <typename I>
struct BlockWork {
  I n0, m0, grp, slice, k_begin, k_end;
};
template <typename Op>
__device__ __forceinline__ BlockWork<typename Op::Index> block_work(const Op& op,
                                                                    typename Op::Index k_chunk) {
  using I = typename Op::Index;
  BlockWork<I> b;
  b.n0 = static_cast<I>(blockIdx.x) * kBN;
  b.m0 = static_cast<I>(blockIdx.y) * kBM;
  b.grp = static_cast<I>(blockIdx.z) % op.groups();
  b.slice = static_cast<I>(blockIdx.z) / op.groups();
  b.k_begin = b.slice * k_chunk;
  const I depth = op.depth();
  b.k_end = depth - b.k_begin < k_chunk ? depth : b.k_begin + k_chunk;
  return b;
}

}  // namespace fastcnn::cuda::tiles
