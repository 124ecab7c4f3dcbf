// The tensor-core implicit-GEMM kernel (mma.sync, sm_80 and later): TF32 for float32 when
// allowed, float16 / bfloat16 operands otherwise, float32 accumulation throughout. Same
// block tile and loaders as the SIMT kernel (conv2d_tiles.cuh); the 8 warps of a block
// form a 2 x 4 grid, each warp owning 32 rows x 16 columns: 2 x 2 mma tiles of 16 x 8.
//
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k8" / "m16n8k16"), with
// g = lane / 4 and t = lane % 4:
//   tf32 m16n8k8:  A a0 (g, t) a1 (g+8, t) a2 (g, t+4) a3 (g+8, t+4); B b0 (k t, n g)
//                  b1 (k t+4, n g)
//   16-bit m16n8k16: A a0 (g, 2t..2t+1) a1 (g+8, 2t..) a2 (g, 2t+8..) a3 (g+8, 2t+8..);
//                  B b0 (k 2t..2t+1, n g) b1 (k 2t+8.., n g); the lower half holds the
//                  lower k
//   C (both):      c0 (g, 2t) c1 (g, 2t+1) c2 (g+8, 2t) c3 (g+8, 2t+1)
#pragma once

#include <cstdint>
#include <type_traits>

#include "cuda/conv2d_tiles.cuh"

namespace fastcnn::cuda {

namespace mma {
constexpr int kThreads = tiles::kThreads;
}  // namespace mma

// Rounds to TF32 (round to nearest, ties away) as the tensor cores read it: the shared tile
// then holds exactly the operands the mma uses.
struct RoundTf32 {
  __device__ float operator()(float v) const {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
    return __uint_as_float(r);
  }
};

template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// d += a * b for one 16 x 8 tile over the whole 16-deep shared step.
template <typename T>
__device__ __forceinline__ void mma_step(const tiles::TileA& As, const tiles::TileB& Bs, int row,
                                         int col, float (&d)[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  if constexpr (std::is_same_v<T, float>) {
#pragma unroll
    for (int k = 0; k < tiles::kBK; k += 8) {
      const uint32_t a0 = __float_as_uint(As[k + t][row + g]);
      const uint32_t a1 = __float_as_uint(As[k + t][row + g + 8]);
      const uint32_t a2 = __float_as_uint(As[k + t + 4][row + g]);
      const uint32_t a3 = __float_as_uint(As[k + t + 4][row + g + 8]);
      const uint32_t b0 = __float_as_uint(Bs[k + t][col + g]);
      const uint32_t b1 = __float_as_uint(Bs[k + t + 4][col + g]);
      asm volatile(
          "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
          "{%8,%9}, {%0,%1,%2,%3};"
          : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
          : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
  } else {
    static_assert(tiles::kBK == 16, "one m16n8k16 per step");
    const uint32_t a0 = pack2<T>(As[2 * t][row + g], As[2 * t + 1][row + g]);
    const uint32_t a1 = pack2<T>(As[2 * t][row + g + 8], As[2 * t + 1][row + g + 8]);
    const uint32_t a2 = pack2<T>(As[2 * t + 8][row + g], As[2 * t + 9][row + g]);
    const uint32_t a3 = pack2<T>(As[2 * t + 8][row + g + 8], As[2 * t + 9][row + g + 8]);
    const uint32_t b0 = pack2<T>(Bs[2 * t][col + g], Bs[2 * t + 1][col + g]);
    const uint32_t b1 = pack2<T>(Bs[2 * t + 8][col + g], Bs[2 * t + 9][col + g]);
    if constexpr (std::is_same_v<T, __half>)
      asm volatile(
          "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
          "{%8,%9}, {%0,%1,%2,%3};"
          : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
          : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    else
      asm volatile(
          "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
          "{%8,%9}, {%0,%1,%2,%3};"
          : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
          : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
#else
  __trap();  // the host never launches this kernel below sm_80
#endif
}

template <typename Op>
__global__ void __launch_bounds__(mma::kThreads) conv_gemm_mma(Op op, typename Op::Index k_chunk) {
  using I = typename Op::Index;
  using T = typename Op::Elem;
  using namespace tiles;
  __shared__ TileA As;
  __shared__ TileB Bs;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wrow = warp / 4 * 32, wcol = warp % 4 * 16;
  const BlockWork<I> b = block_work(op, k_chunk);
  const Slots<Op> slots = resolve_slots(op, b.grp, b.m0, b.n0);

  float acc[2][2][4] = {};
  for (I k0 = b.k_begin; k0 < b.k_end; k0 += kBK) {
    if constexpr (std::is_same_v<T, float>)
      load_step(op, slots, k0, b.k_end, As, Bs, RoundTf32{});
    else
      load_step(op, slots, k0, b.k_end, As, Bs);
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
        mma_step<T>(As, Bs, wrow + 16 * mt, wcol + 8 * nt, acc[mt][nt]);
  }
  const I M = op.rows(), Ncol = op.cols();
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const I m = b.m0 + wrow + 16 * mt + g + (e >= 2 ? 8 : 0);
        const I col = b.n0 + wcol + 8 * nt + 2 * t + (e & 1);
        if (m < M && col < Ncol) op.store(b.grp, b.slice, m, col, acc[mt][nt][e]);
      }
}

}  // namespace fastcnn::cuda
