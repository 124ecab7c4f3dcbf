// The backward-weight dot-product kernel, written once and compiled per ISA: vectors of
// `Bytes` bytes (GCC/Clang vector extensions) run along the reduction, so an MR x NR tile of
// outputs keeps MR * NR vector accumulators and sums each horizontally once at the end.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>

#include "cpu/conv2d_backward_weight.h"

namespace fastcnn::cpu {
namespace {

// Horizontal sums of `lanes` vectors at once: each step adds the two halves of every lane
// segment of a pair of vectors into one vector (segments halve, vectors halve), so after
// log2(lanes) steps lane e holds the sum of vector e: lanes - 1 adds and twice as many
// shuffles for all of them, instead of log2(lanes) extract-and-add steps for each.
constexpr int fold_index(int lanes, int seg, int p) {
  const int half = p / (lanes / 2), r = p % (lanes / 2);
  return half * lanes + r / (seg / 2) * seg + r % (seg / 2);
}

template <int Seg, typename V, int... P>
[[gnu::always_inline]] inline V fold_pair(V x, V y, std::integer_sequence<int, P...>) {
  constexpr int lanes = sizeof...(P);
  return __builtin_shufflevector(x, y, fold_index(lanes, Seg, P)...) +
         __builtin_shufflevector(x, y, (fold_index(lanes, Seg, P) + Seg / 2)...);
}

template <int Seg, int Lanes, typename V>
[[gnu::always_inline]] inline void fold(V* v, int count) {
  if constexpr (Seg > 1) {
#pragma GCC unroll 16
    for (int i = 0; i < count / 2; ++i)
      v[i] = fold_pair<Seg>(v[2 * i], v[2 * i + 1], std::make_integer_sequence<int, Lanes>{});
    fold<Seg / 2, Lanes>(v, count / 2);
  }
}

template <typename T, int Bytes, int MR, int NR>
void dot_tile(int64_t len, const T* __restrict a, int64_t lda, const T* const* __restrict b,
              T* __restrict c, int64_t ldc) {
  typedef T V __attribute__((vector_size(Bytes)));
  constexpr int lanes = Bytes / sizeof(T);
  V acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) acc[i][j] = V{};
  // One row of a at a time: MR * NR accumulators, NR rows of b and one of a in registers
  // (31 of 32 with AVX-512), so that nothing is loaded twice.
  for (int64_t l = 0; l < len; l += lanes) {
    V bv[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) std::memcpy(&bv[j], b[j] + l, Bytes);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      V av;
      std::memcpy(&av, a + i * lda + l, Bytes);
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] += av * bv[j];
    }
  }
#pragma GCC unroll 4
  for (int t0 = 0; t0 < MR * NR; t0 += lanes) {
    V v[lanes];
#pragma GCC unroll 16
    for (int e = 0; e < lanes; ++e)
      v[e] = t0 + e < MR * NR ? acc[(t0 + e) / NR][(t0 + e) % NR] : V{};
    fold<lanes, lanes>(v, lanes);
#pragma GCC unroll 16
    for (int e = 0; e < lanes; ++e)
      if (t0 + e < MR * NR) c[(t0 + e) / NR * ldc + (t0 + e) % NR] += v[0][e];
  }
}

template <typename T>
using DotTile = void (*)(int64_t, const T*, int64_t, const T* const*, T*, int64_t);

// Every tile shape up to MR x NR, so that row and column tails cost only what they hold.
template <typename T, int Bytes, int MR, int NR, size_t... I>
constexpr std::array<DotTile<T>, MR * NR> dot_tiles(std::index_sequence<I...>) {
  return {&dot_tile<T, Bytes, static_cast<int>(I / NR) + 1, static_cast<int>(I % NR) + 1>...};
}

template <typename T, int Bytes, int MR, int NR>
void dot_gemm(int64_t m, int64_t n, int64_t len, const T* a, int64_t lda, const T* const* b, T* c,
              int64_t ldc) {
  static_assert(Bytes % sizeof(T) == 0 && kDotAlign % Bytes == 0);
  static constexpr std::array<DotTile<T>, MR * NR> tiles =
      dot_tiles<T, Bytes, MR, NR>(std::make_index_sequence<MR * NR>{});
  // Column tiles outside row tiles: their NR rows of b stay in L1 while rows of a pass by.
  // Row chunks outermost: their rows of a stay in L2 while every column passes.
  for (int64_t i0 = 0; i0 < m; i0 += kDotRowChunk) {
    const int64_t i1 = std::min(m, i0 + kDotRowChunk);
    for (int64_t j = 0; j < n; j += NR) {
      const int64_t nr = std::min<int64_t>(NR, n - j);
      for (int64_t i = i0; i < i1; i += MR) {
        const int64_t mr = std::min<int64_t>(MR, i1 - i);
        tiles[(mr - 1) * NR + nr - 1](len, a + i * lda, lda, b + j, c + i * ldc + j, ldc);
      }
    }
  }
}

// Tile shapes per vector width: MR * NR accumulators plus MR + 1 operands fit the register file
// (32 registers with AVX-512, 16 otherwise).
template <int Bytes, int MR, int NR>
DotKernels make_dot_kernels() {
  return {&dot_gemm<float, Bytes, MR, NR>, &dot_gemm<double, Bytes, MR, NR>};
}

}  // namespace
}  // namespace fastcnn::cpu
