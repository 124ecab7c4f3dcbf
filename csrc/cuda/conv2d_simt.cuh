// The exact-FP32 implicit-GEMM kernel (CUDA cores): the path for float32 without TF32 and
// the reference the tensor-core kernel is tested against. Each of the block's 256 threads
// keeps a 4 x 4 sub-tile of C (rows ty + 16 i, columns tx + 16 j) in registers.
#pragma once

#include "cuda/conv2d_tiles.cuh"

namespace fastcnn::cuda {

template <typename Op>
__global__ void __launch_bounds__(tiles::kThreads)
    conv_gemm_simt(Op op, typename Op::Index k_chunk) {
  using I = typename Op::Index;
  using namespace tiles;
  __shared__ TileA As;
  __shared__ TileB Bs;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const BlockWork<I> b = block_work(op, k_chunk);
  const Slots<Op> slots = resolve_slots(op, b.grp, b.m0, b.n0);

  float acc[4][4] = {};
  for (I k0 = b.k_begin; k0 < b.k_end; k0 += kBK) {
    load_step(op, slots, k0, b.k_end, As, Bs);
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      float av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = As[kk][ty + 16 * i], bv[i] = Bs[kk][tx + 16 * i];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
  }
  const I M = op.rows(), Ncol = op.cols();
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const I m = b.m0 + ty + 16 * i, col = b.n0 + tx + 16 * j;
      if (m < M && col < Ncol) op.store(b.grp, b.slice, m, col, acc[i][j]);
    }
}

}  // namespace fastcnn::cuda
