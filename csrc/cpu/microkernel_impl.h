// The register-blocked micro-kernel body, written once and compiled per ISA: with MR and NR
// known at compile time the compiler keeps the MR x NR accumulators in vector registers.
#pragma once

#include <cstdint>

#include "cpu/microkernel.h"

namespace fastcnn::cpu {

template <typename T, int MR, int NR>
void microkernel_body(int64_t kc, const T* __restrict a, const T* __restrict b, T* __restrict c) {
  T acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    const T* ak = a + k * MR;
    const T* bk = b + k * NR;
    for (int i = 0; i < MR; ++i) {
      const T ai = ak[i];
      for (int j = 0; j < NR; ++j) acc[i][j] += ai * bk[j];
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) c[i * NR + j] = acc[i][j];
}

// One row of a finished tile through the epilogue into memory.
template <typename T>
inline void epilogue_row(const T* __restrict acc, T* __restrict c, int cols, const Epilogue<T>& ep,
                         int row) {
  const T bias = ep.bias ? ep.bias[row] : T(0);
  for (int j = 0; j < cols; ++j) {
    T v = ep.accumulate ? c[j] + acc[j] : acc[j];
    v += bias;
    if (ep.col_bias) v += ep.col_bias[j];
    if (ep.relu) v = v < T(0) ? T(0) : v;
    c[j] = v;
  }
}

template <typename T, int MR, int NR>
void microkernel_store_body(int64_t kc, const T* a, const T* b, T* c, int64_t ldc, int rows,
                            int cols, const Epilogue<T>& ep) {
  alignas(64) T acc[MR * NR];
  microkernel_body<T, MR, NR>(kc, a, b, acc);
  for (int i = 0; i < rows; ++i) epilogue_row(acc + i * NR, c + i * ldc, cols, ep, i);
}

template <typename T, int MR, int NR>
MicroKernel<T> make_microkernel() {
  return {MR, NR, &microkernel_body<T, MR, NR>, &microkernel_store_body<T, MR, NR>};
}

template <int MR32, int NR32, int MR64, int NR64>
MicroKernels make_microkernels(const char* isa) {
  return {isa, make_microkernel<float, MR32, NR32>(), make_microkernel<double, MR64, NR64>()};
}

}  // namespace fastcnn::cpu
