// The register-blocked micro-kernel body, written once and compiled per ISA: with MR and NR
// known at compile time the compiler keeps the MR x NR accumulators in vector registers.
#pragma once

#include <cstdint>

#include "cpu/microkernel.h"

namespace fastcnn::cpu {

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

template <typename T, int MR, int NR, typename A>
void microkernel_body(int64_t kc, const A& a, const T* __restrict b, T* __restrict c) {
  T acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    const T* bk = b + k * NR;
    for (int i = 0; i < MR; ++i) {
      const T ai = a(k, i);
      for (int j = 0; j < NR; ++j) acc[i][j] += ai * bk[j];
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) c[i * NR + j] = acc[i][j];
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

}  // namespace fastcnn::cpu
