// The widest vector of the ISA that the including translation unit is compiled for, from its
// flags: 64 bytes with AVX-512, 32 with AVX, 16 with the SSE2 of every x86-64 CPU (and the
// 128-bit vectors elsewhere). Internal linkage: each ISA's units keep their own value.
#pragma once

#include <cstring>

namespace fastcnn::cpu {
namespace {

#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
#elif defined(__AVX__)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;
#endif

// v with its negative lanes zeroed and NaN kept, as torch.relu, for a vector type of any
// width: the select runs on pieces of the ISA's width. On a vector wider than the ISA's GCC
// lowered it lane by lane (the AVX2 Winograd forward took 1.3x as long with its ReLU).
template <typename V>
inline V relu_lanes(V v) {
  using E = decltype(v[0] + 0);
  constexpr int kBytes = sizeof(V) < kVectorBytes ? sizeof(V) : kVectorBytes;
  typedef E Piece __attribute__((vector_size(kBytes)));
  Piece pieces[sizeof(V) / kBytes];
  std::memcpy(pieces, &v, sizeof v);
  for (Piece& p : pieces) p = p < E(0) ? Piece{} : p;  // false for NaN: NaN stays
  std::memcpy(&v, pieces, sizeof v);
  return v;
}

}  // namespace
}  // namespace fastcnn::cpu
