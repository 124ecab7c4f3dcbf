// The ReLU kernel bodies, compiled per ISA (cpu/{generic,avx2,avx512}/relu.cpp): the vector
// width and the streaming store follow the flags of the including translation unit (64 bytes
// with AVX-512, 32 with AVX, 16 with the SSE2 of every x86-64 CPU; elsewhere the compiler's
// own vectors and plain stores). Everything here has internal linkage, so the copies compiled
// with different flags never stand in for one another at link time.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "cpu/relu_kernels.h"
#include "cpu/vector_width.h"

namespace fastcnn::cpu {
namespace {

template <typename T>
struct Lanes {
  typedef T V __attribute__((vector_size(kVectorBytes)));
  static constexpr int64_t n = kVectorBytes / sizeof(T);
  static V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
};

// Non-temporal stores of whole aligned vectors, and the fence that orders them before the
// caller's next stores.
#if defined(__SSE2__)
constexpr bool kStreams = true;
template <typename V>
inline void stream(float* p, V v) {
  if constexpr (kVectorBytes == 64)
    _mm512_stream_ps(p, reinterpret_cast<__m512>(v));
  else if constexpr (kVectorBytes == 32)
    _mm256_stream_ps(p, reinterpret_cast<__m256>(v));
  else
    _mm_stream_ps(p, reinterpret_cast<__m128>(v));
}
template <typename V>
inline void stream(double* p, V v) {
  if constexpr (kVectorBytes == 64)
    _mm512_stream_pd(p, reinterpret_cast<__m512d>(v));
  else if constexpr (kVectorBytes == 32)
    _mm256_stream_pd(p, reinterpret_cast<__m256d>(v));
  else
    _mm_stream_pd(p, reinterpret_cast<__m128d>(v));
}
inline void stream_fence() {
  _mm_sfence();
}
#else
constexpr bool kStreams = false;
template <typename T, typename V>
inline void stream(T* p, V v) {
  std::memcpy(p, &v, sizeof v);
}
inline void stream_fence() {}
#endif

// out[i] = f(in[i]...) for i < n. f takes scalars or vectors alike (its selects compile to
// vector selects); the plain loop is left to the compiler's vectorizer, the streamed one
// stores a vector at a time from the first aligned element.
template <typename T, typename F, typename... In>
void map(int64_t n, bool streamed, const F& f, T* out, const In*... in) {
  using L = Lanes<T>;
  int64_t i = 0;
  if (streamed && kStreams) {
    for (; i < n && reinterpret_cast<uintptr_t>(out + i) % kVectorBytes != 0; ++i)
      out[i] = f(in[i]...);
    for (; i + L::n <= n; i += L::n) stream(out + i, f(L::load(in + i)...));
    stream_fence();
  }
  for (; i < n; ++i) out[i] = f(in[i]...);
}

// Scalars and vectors alike: v < 0 is false for NaN, so NaN passes through as in torch.relu.
constexpr auto kRelu = [](auto v) { return v < decltype(v){} ? decltype(v){} : v; };
// As torch's threshold_backward: the gradient passes where output > 0 (or is NaN).
constexpr auto kReluBackward = [](auto g, auto out) {
  return out <= decltype(out){} ? decltype(g){} : g;
};
// Guided: additionally clamp the gradient at 0 (NaN gradients stay NaN, as clamp does).
constexpr auto kGuidedBackward = [](auto g, auto out) {
  return out <= decltype(out){} || g < decltype(g){} ? decltype(g){} : g;
};

template <typename T>
ReluKernels<T> relu_kernels_for() {
  return {[](int64_t n, const T* in, T* out, bool streamed) { map(n, streamed, kRelu, out, in); },
          [](int64_t n, const T* dy, const T* y, T* dx, bool guided, bool streamed) {
            if (guided)
              map(n, streamed, kGuidedBackward, dx, dy, y);
            else
              map(n, streamed, kReluBackward, dx, dy, y);
          }};
}

}  // namespace
}  // namespace fastcnn::cpu
