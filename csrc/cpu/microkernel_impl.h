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

template <int MR32, int NR32, int MR64, int NR64>
MicroKernels make_microkernels(const char* isa) {
  return {isa,
          {MR32, NR32, &microkernel_body<float, MR32, NR32>},
          {MR64, NR64, &microkernel_body<double, MR64, NR64>}};
}

}  // namespace fastcnn::cpu
