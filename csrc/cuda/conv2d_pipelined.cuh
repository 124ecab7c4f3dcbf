// The pipelined tensor-core forward for channels_last images (sm_80 and later): an implicit
// GEMM whose rows are output positions and whose columns are filters, reduced over
// (r, s, c) with c innermost, so that a reduction step of kBK channels reads one 16-byte
// run per row from the image (NHWC) and per column from the weights (KRSC). Operands move
// from global memory to shared memory by cp.async in kStages stages, in their own dtype
// (zero-filled where a window leaves the image), and the 8 warps of a block (a 2 x 4 grid
// of 64 x 32 warp tiles over a 128 x 128 block tile; 4 warps over 128 x 64) issue
// mma.sync on fragments read from swizzled tiles, conflict-free.
//
// It takes a convolution when pipelined::fits() holds: one group, the image and weights
// channels_last with 16-byte aligned runs, channels a multiple of kBK. Everything else runs
// the tile-loading kernels (conv2d_tiles.cuh).
//
// Fragment layouts (PTX ISA, mma.m16n8k8 for tf32, mma.m16n8k16 for 16-bit types), g =
// lane / 4, t = lane % 4, A row-major (row = output position, col = reduction), B column-
// major (col = filter): tf32 a0 (g, t) a1 (g+8, t) a2 (g, t+4) a3 (g+8, t+4), b0 (t, g)
// b1 (t+4, g); 16-bit: each register holds two consecutive reduction indices, a0 (g, 2t)
// a1 (g+8, 2t) a2 (g, 2t+8) a3 (g+8, 2t+8), b0 (2t, g) b1 (2t+8, g); C c0 (g, 2t) c1
// (g, 2t+1) c2 (g+8, 2t) c3 (g+8, 2t+1).
#pragma once

#include <cstdint>
#include <type_traits>

#include "cuda/common.cuh"
#include "cuda/conv2d_ops.cuh"

namespace fastcnn::cuda::pipelined {

constexpr int kBK = 32;   // reduction depth of a stage, in elements
constexpr int kBM = 128;  // output positions per block
constexpr int kStages = 3;

// 16-byte chunks: 4 floats or 8 16-bit values; a tile row of kBK elements holds kChunks.
template <typename T>
constexpr int kChunk = 16 / static_cast<int>(sizeof(T));
template <typename T>
constexpr int kChunks = kBK / kChunk<T>;

// Where 16-byte chunk `chunk` of tile row `row` lies, in chunks from the tile's start. Rows
// are kChunks chunks long; XOR-ing the chunk with bits of the row puts the 8 rows a
// fragment read touches (8 lanes apart in g) on distinct banks: float rows span all 32
// banks, so row % 8 picks the chunk; 16-bit rows span 16, so rows pair up, (row / 2) % 4.
template <typename T>
FASTCNN_HD int swizzle(int row, int chunk) {
  if constexpr (sizeof(T) == 4)
    return row * kChunks<T> + (chunk ^ (row & 7));
  else
    return row * kChunks<T> + (chunk ^ ((row >> 1) & 3));
}

// The 32-bit word holding element k (and, for 16-bit types, k + 1) of tile row `row`.
template <typename T>
FASTCNN_HD int word(int row, int k) {
  constexpr int per_word = 4 / static_cast<int>(sizeof(T));
  return (swizzle<T>(row, k / kChunk<T>) * kChunk<T> + k % kChunk<T>) / per_word;
}

// Block shape: kBM x BN, warps of 64 x 32.
template <int BN>
struct Shape {
  static_assert(BN == 64 || BN == 128, "a block holds 64 or 128 filters");
  static constexpr int kWarpsN = BN / 32, kWarps = 2 * kWarpsN, kThreads = 32 * kWarps;
};

template <typename T, int BN>
constexpr int kSharedBytes = kStages * (kBM + BN) * kBK * static_cast<int>(sizeof(T));

// Whether the forward of g can run here (the dtype's tensor cores are in use): see the
// file comment. `x` and `w` are the data pointers, whose runs must be 16-byte aligned.
template <typename T>
bool fits(const ConvGeom<int64_t>& g, const void* x, const void* w) {
  const int64_t chunk = kChunk<T>;
  const bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(w) % 16 == 0 && g.xs[0] % chunk == 0 &&
                       g.xs[2] % chunk == 0 && g.xs[3] % chunk == 0 && g.ws[0] % chunk == 0;
  return g.G == 1 && g.x_cl && g.xs[1] == 1 && g.w_rows_dense && g.C % kBK == 0 && aligned;
}

// The output position of GEMM row m: its image's offset and the window's top-left corner.
struct Window {
  int64_t base;
  int ih0, iw0;
  bool valid;
};
template <typename I>
FASTCNN_HD Window window_of(const ConvGeom<I>& g, int64_t m) {
  if (m >= g.N * g.P()) return {0, 0, 0, false};
  I n, oh, ow;
  g.nhw(static_cast<I>(m), n, oh, ow);
  return {n * g.xs[0], static_cast<int>(oh * g.sh - g.ph), static_cast<int>(ow * g.sw - g.pw),
          true};
}

// The tap (r, s) and first channel c of a reduction step, advanced step by step (the steps
// of a stage load in increasing order), so that no step divides.
struct Tap {
  int64_t r = 0, s = 0, c = 0;
  template <typename I>
  FASTCNN_HD void advance(const ConvGeom<I>& g) {
    c += kBK;
    if (c < g.C) return;
    c = 0;
    if (++s < g.S) return;
    s = 0, ++r;
  }
};

// Global offset, in elements, of the 16-byte run `chunk` of a tap's channels in a window,
// or -1 where the tap falls in the padding (or the row is past the last position).
template <typename T, typename I>
FASTCNN_HD int64_t image_run(const ConvGeom<I>& g, const Window& win, const Tap& tap, int chunk) {
  const int64_t ih = win.ih0 + tap.r * g.dh, iw = win.iw0 + tap.s * g.dw;
  if (!win.valid || ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) return -1;
  return win.base + ih * g.xs[2] + iw * g.xs[3] + tap.c + chunk * kChunk<T>;
}

// The output offset of GEMM row m (its position), or -1 past the last one.
template <typename I>
FASTCNN_HD int64_t output_row(const ConvGeom<I>& g, int64_t m) {
  if (m >= g.N * g.P()) return -1;
  I n, oh, ow;
  g.nhw(static_cast<I>(m), n, oh, ow);
  return n * g.ys[0] + oh * g.ys[2] + ow * g.ys[3];
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800

// Copies 16 bytes from src to shared memory at dst, or writes 16 zero bytes when !valid
// (src is then not read).
__device__ __forceinline__ void copy_async(void* dst, const void* src, bool valid) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int kPending>
__device__ __forceinline__ void wait_pending() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

__device__ __forceinline__ uint32_t tf32(uint32_t bits) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(__uint_as_float(bits)));
  return r;
}

// d += a * b, one m16n8 tile over one mma's depth (8 for tf32, 16 for 16-bit types).
template <typename T>
__device__ __forceinline__ void mma(const uint32_t (&a)[4], const uint32_t (&b)[2], float (&d)[4]) {
  if constexpr (std::is_same_v<T, float>)
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  else if constexpr (std::is_same_v<T, __half>)
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

#endif

template <typename T, int BN>
__global__ void __launch_bounds__(Shape<BN>::kThreads)
    forward_channels_last(ForwardOp<T, int64_t> op) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using S = Shape<BN>;
  constexpr int kChunkT = kChunk<T>, kChunksT = kChunks<T>;
  constexpr int kLoadsA = kBM * kChunksT / S::kThreads, kLoadsB = BN * kChunksT / S::kThreads;
  static_assert(kLoadsA * S::kThreads == kBM * kChunksT && kLoadsB * S::kThreads == BN * kChunksT,
                "every thread loads whole chunks");
  const ConvGeom<int64_t>& g = op.g;
  extern __shared__ __align__(16) unsigned char shared[];
  T* As = reinterpret_cast<T*>(shared);  // [kStages][kBM][kBK], swizzled chunks
  T* Bs = As + kStages * kBM * kBK;      // [kStages][BN][kBK]
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g4 = lane / 4, t4 = lane % 4;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kBM;
  const int n0 = static_cast<int>(blockIdx.y) * BN;

  // This thread's loads: chunk e = tid + i * threads is chunk e % kChunks of tile row
  // e / kChunks, the same rows and chunk column at every step.
  Window win[kLoadsA];
#pragma unroll
  for (int i = 0; i < kLoadsA; ++i) win[i] = window_of(g, m0 + (tid + i * S::kThreads) / kChunksT);
  const int chunk = tid % kChunksT;  // threads is a multiple of kChunks
  const int64_t depth = g.C * g.R * g.S, steps = depth / kBK;

  Tap tap;  // of the next step to load
  auto load_stage = [&](int stage, int64_t step) {
    const int64_t k0 = step * kBK;
    T* a = As + stage * kBM * kBK;
    T* b = Bs + stage * BN * kBK;
#pragma unroll
    for (int i = 0; i < kLoadsA; ++i) {
      const int row = (tid + i * S::kThreads) / kChunksT;
      const int64_t at = image_run<T>(g, win[i], tap, chunk);
      copy_async(a + swizzle<T>(row, chunk) * kChunkT, at < 0 ? op.x : op.x + at, at >= 0);
    }
#pragma unroll
    for (int i = 0; i < kLoadsB; ++i) {
      const int row = (tid + i * S::kThreads) / kChunksT;
      const bool valid = n0 + row < g.K;
      const T* src = op.w + (valid ? (n0 + row) * g.ws[0] + k0 + chunk * kChunkT : 0);
      copy_async(b + swizzle<T>(row, chunk) * kChunkT, src, valid);
    }
    tap.advance(g);
  };

  const int wm = warp % 2 * 64, wn = warp / 2 * 32;
  float acc[4][4][4] = {};
  constexpr int kDepth = std::is_same_v<T, float> ? 8 : 16;  // one mma's reduction depth
  auto compute_stage = [&](int stage) {
    const uint32_t* a = reinterpret_cast<const uint32_t*>(As + stage * kBM * kBK);
    const uint32_t* b = reinterpret_cast<const uint32_t*>(Bs + stage * BN * kBK);
    // Reduction offsets of a fragment's two halves: t and t + 4 (tf32), 2t and 2t + 8.
    constexpr int kHalf = kDepth / 2;
    const int kt = std::is_same_v<T, float> ? t4 : 2 * t4;
#pragma unroll
    for (int kk = 0; kk < kBK; kk += kDepth) {
      uint32_t fa[4][4], fb[4][2];
#pragma unroll
      for (int mt = 0; mt < 4; ++mt) {
        const int row = wm + mt * 16 + g4;
        fa[mt][0] = a[word<T>(row, kk + kt)];
        fa[mt][1] = a[word<T>(row + 8, kk + kt)];
        fa[mt][2] = a[word<T>(row, kk + kt + kHalf)];
        fa[mt][3] = a[word<T>(row + 8, kk + kt + kHalf)];
      }
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        const int col = wn + nt * 8 + g4;
        fb[nt][0] = b[word<T>(col, kk + kt)];
        fb[nt][1] = b[word<T>(col, kk + kt + kHalf)];
      }
      if constexpr (std::is_same_v<T, float>) {
#pragma unroll
        for (int mt = 0; mt < 4; ++mt)
#pragma unroll
          for (int e = 0; e < 4; ++e) fa[mt][e] = tf32(fa[mt][e]);
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) fb[nt][0] = tf32(fb[nt][0]), fb[nt][1] = tf32(fb[nt][1]);
      }
#pragma unroll
      for (int mt = 0; mt < 4; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) mma<T>(fa[mt], fb[nt], acc[mt][nt]);
    }
  };

  // Stages 0 .. kStages-2 in flight, then one step per iteration: wait for the oldest,
  // refill the stage every warp finished reading last iteration, compute.
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < steps) load_stage(s, s);
    commit();
  }
  for (int64_t step = 0; step < steps; ++step) {
    wait_pending<kStages - 2>();
    __syncthreads();
    const int64_t next = step + kStages - 1;
    if (next < steps) load_stage(static_cast<int>(next % kStages), next);
    commit();
    compute_stage(static_cast<int>(step % kStages));
  }
  wait_pending<0>();

  // Epilogue: bias and ReLU (ForwardOp::finish), stored in the output's layout.
#pragma unroll
  for (int mt = 0; mt < 4; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int64_t at = output_row(g, m0 + wm + mt * 16 + g4 + 8 * half);
      if (at < 0) continue;
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int k = n0 + wn + nt * 8 + 2 * t4 + e;
          if (k < g.K) op.y[at + k * g.ys[1]] = op.finish(k, acc[mt][nt][2 * half + e]);
        }
    }
#else
  __trap();  // the host never launches this kernel below sm_80
#endif
}

// Launches the forward of `op` (pipelined::fits holds) on `stream`.
template <typename T>
void launch_forward(const ForwardOp<T, int64_t>& op, cudaStream_t stream, const char* name) {
  const ConvGeom<int64_t>& g = op.g;
  auto run = [&](auto bn) {
    constexpr int BN = decltype(bn)::value;
    constexpr int bytes = kSharedBytes<T, BN>;
    auto* kernel = &forward_channels_last<T, BN>;
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes),
               name, "cudaFuncSetAttribute");
    const int64_t row_tiles = ceil_div(g.N * g.Ho * g.Wo, kBM), col_tiles = ceil_div(g.K, BN);
    FASTCNN_CHECK(row_tiles <= 0x7fffffff && col_tiles <= 65535, name,
                  ": too many output positions or filters for one launch");
    kernel<<<dim3(static_cast<unsigned>(row_tiles), static_cast<unsigned>(col_tiles)),
             Shape<BN>::kThreads, bytes, stream>>>(op);
    check_launch(name);
  };
  // 64 filters or fewer fill a 64-wide tile; more take 128 (the last tile partly empty).
  if (g.K <= 64)
    run(std::integral_constant<int, 64>{});
  else
    run(std::integral_constant<int, 128>{});
}

}  // namespace fastcnn::cuda::pipelined
