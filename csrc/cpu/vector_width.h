// The widest vector of the ISA that the including translation unit is compiled for, from its
// flags: 64 bytes with AVX-512, 32 with AVX, 16 with the SSE2 of every x86-64 CPU (and the
// 128-bit vectors elsewhere). Internal linkage: each ISA's units keep their own value.
#pragma once

namespace fastcnn::cpu {
namespace {

#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
#elif defined(__AVX__)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;
#endif

}  // namespace
}  // namespace fastcnn::cpu
