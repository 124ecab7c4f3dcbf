// The register-blocked micro-kernel body, written once and compiled per ISA: with MR and NR
// known at compile time the compiler keeps the MR x NR accumulators in vector registers.
#pragma once

#include <cstdint>
#include <cstring>

#include "cpu/microkernel.h"
#include "cpu/vector_width.h"

namespace fastcnn::cpu {
// Each ISA's unit compiles its own copy with its own flags (and vector width).
namespace {

// Element (k, i) of A: packed panels hold it at p[k * MR + i]; rows read in place at r[i][k].
template <typename T, int MR>
struct PackedA {
  static constexpr bool kRows = false;
  const T* p;
  T operator()(int64_t k, int i) const { return p[k * MR + i]; }
};
template <typename T, int MR>
struct RowsA {
  static constexpr bool kRows = true;
  const T* r[MR];
  T operator()(int64_t k, int i) const { return r[i][k]; }
};

// Rows past `rows` read row 0: their sums are never stored.
template <typename T, int MR>
RowsA<T, MR> rows_at(const T* a, int64_t lda, int rows) {
  RowsA<T, MR> ra;
  for (int i = 0; i < MR; ++i) ra.r[i] = a + (i < rows ? i : 0) * lda;
  return ra;
}

// A vector of type V from p, unaligned, by value.
template <typename V, typename T>
inline V load_vec(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Reduction steps per loop iteration: unrolled by 4, AVX2's loop spent fewer of its uops on
// its counter (C11 1.07-1.08x, C5 and D2 1.02-1.05x); the portable build's (SSE2, no FMA)
// lost 2-7 % on C5 and D2, and is left rolled.
constexpr int kUnrollK = kVectorBytes >= 32 ? 4 : 1;

// The accumulators are MR x (NR / lanes) vectors of the ISA's width, kept in registers: as a
// scalar array (or as vectors wider than the ISA's) the compiler kept them on the stack, and
// the AVX2 build's GEMMs ran at 3-5 GFLOP/s.
template <typename T, int MR, int NR, typename A>
void microkernel_body(int64_t kc, const A& a, const T* __restrict b, T* __restrict c) {
  typedef T Vec __attribute__((vector_size(kVectorBytes)));
  constexpr int kLanes = kVectorBytes / sizeof(T), kVecs = NR / kLanes;
  static_assert(NR % kLanes == 0, "a tile row is whole vectors");
  // Loads and stores one vector at a time, by value: the accumulators never have their address
  // taken, or the compiler would keep them in memory.
  Vec acc[MR][kVecs] = {};
#pragma GCC unroll kUnrollK
  for (int64_t k = 0; k < kc; ++k) {
    Vec bk[kVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) bk[v] = load_vec<Vec>(b + k * NR + v * kLanes);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const T ai = a(k, i);
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) acc[i][v] += ai * bk[v];
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) {
      const Vec out = acc[i][v];
      std::memcpy(c + i * NR + v * kLanes, &out, sizeof out);
    }
}

template <typename T, int MR, int NR>
void microkernel_run(int64_t kc, const T* a, const T* b, T* c) {
  microkernel_body<T, MR, NR>(kc, PackedA<T, MR>{a}, b, c);
}

// One element of a finished tile through the epilogue: v the product, dst where it lands.
template <typename T>
inline void epilogue_element(T v, T& dst, const Epilogue<T>& ep, int row, int col) {
  if (ep.accumulate) v += dst;
  if (ep.bias) v += ep.bias[row];
  if (ep.col_bias) v += ep.col_bias[col];
  if (ep.relu) v = v < T(0) ? T(0) : v;
  dst = v;
}

// Whole rows of a tile through the epilogue a vector at a time, in epilogue_element's order.
// (Element by element, GCC turned the plain case's row loop into a memcpy call per row; by
// vectors AVX2's GEMM layers ran up to 1.06x faster, the portable build's alike.)
template <typename T, int MR, int NR>
void store_rows(const T* acc, T* c, int64_t ldc, int rows, const Epilogue<T>& ep) {
  typedef T Vec __attribute__((vector_size(kVectorBytes)));
  constexpr int kLanes = kVectorBytes / sizeof(T), kVecs = NR / kLanes;
  for (int i = 0; i < rows; ++i) {
    T* ci = c + i * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) {
      Vec out = load_vec<Vec>(acc + i * NR + v * kLanes);
      if (ep.accumulate) out += load_vec<Vec>(ci + v * kLanes);
      if (ep.bias) out += ep.bias[i];
      if (ep.col_bias) out += load_vec<Vec>(ep.col_bias + v * kLanes);
      if (ep.relu) out = relu_lanes(out);
      std::memcpy(ci + v * kLanes, &out, sizeof out);
    }
  }
}

template <typename T, int MR, int NR, typename A>
void microkernel_store_body(int64_t kc, const A& a, const T* b, T* c, int64_t ldc, int rows,
                            int cols, const Epilogue<T>& ep) {
  alignas(64) T acc[MR * NR];
  microkernel_body<T, MR, NR>(kc, a, b, acc);
  if (ep.transposed) {
    for (int j = 0; j < cols; ++j)
      for (int i = 0; i < rows; ++i) epilogue_element(acc[i * NR + j], c[j * ldc + i], ep, i, j);
    return;
  }
  if (cols == NR) return store_rows<T, MR, NR>(acc, c, ldc, rows, ep);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) epilogue_element(acc[i * NR + j], c[i * ldc + j], ep, i, j);
}

template <typename T, int MR, int NR>
void microkernel_store(int64_t kc, const T* a, const T* b, T* c, int64_t ldc, int rows, int cols,
                       const Epilogue<T>& ep) {
  microkernel_store_body<T, MR, NR>(kc, PackedA<T, MR>{a}, b, c, ldc, rows, cols, ep);
}

template <typename T, int MR, int NR>
void microkernel_store_rows(int64_t kc, const T* a, int64_t lda, const T* b, T* c, int64_t ldc,
                            int rows, int cols, const Epilogue<T>& ep) {
  microkernel_store_body<T, MR, NR>(kc, rows_at<T, MR>(a, lda, rows), b, c, ldc, rows, cols, ep);
}

template <typename T, int MR, int NR>
MicroKernel<T> make_microkernel() {
  return {MR, NR, &microkernel_run<T, MR, NR>, &microkernel_store<T, MR, NR>,
          &microkernel_store_rows<T, MR, NR>};
}

template <int MR32, int NR32, int MR64, int NR64>
MicroKernels make_microkernels(const char* isa) {
  return {isa, make_microkernel<float, MR32, NR32>(), make_microkernel<double, MR64, NR64>()};
}

}  // namespace
}  // namespace fastcnn::cpu
