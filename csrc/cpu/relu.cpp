// ReLU and its backward over flat, contiguous element ranges (any dense layout flattens).
#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "cpu/checks.h"
#include "cpu/parallel.h"
#include "fastcnn/ops.h"

namespace fastcnn::cpu {
namespace {

constexpr int64_t kGrain = 1 << 16;

// Ops whose operands and output together take at least this many bytes (twice the dev
// machine's 32 MB last-level cache) write their output with non-temporal stores: it would not
// stay in cache anyway, and ordinary stores read every output line before writing it. relu
// backward over 25.7 MB operands (77 MB in all): 1.52 -> 1.04 ms; relu forward over the same
// (51 MB, much of it still cached between calls) measured slower streamed, 0.93 -> 1.08 ms.
constexpr int64_t kStreamBytes = int64_t{64} << 20;

// 16-byte vectors: the baseline ISA's (SSE2 on x86-64), whose streaming store needs nothing
// more.
template <typename T>
struct Lanes {
  typedef T V __attribute__((vector_size(16)));
  static constexpr int64_t n = 16 / sizeof(T);
  static V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
};

#if defined(__SSE2__)
constexpr bool kStreams = true;
inline void stream(float* p, Lanes<float>::V v) {
  _mm_stream_ps(p, reinterpret_cast<__m128>(v));
}
inline void stream(double* p, Lanes<double>::V v) {
  _mm_stream_pd(p, reinterpret_cast<__m128d>(v));
}
inline void stream_fence() {
  _mm_sfence();
}
#else
constexpr bool kStreams = false;
template <typename T>
void stream(T* p, typename Lanes<T>::V v) {
  std::memcpy(p, &v, sizeof v);
}
inline void stream_fence() {}
#endif

void check_flat(const char* op, const char* name, const TensorView& t, const TensorView& ref) {
  check_cpu_float(op, name, t);
  check_same_dtype(op, name, t, ref);
  check_contiguous(op, name, t);
  FASTCNN_CHECK(t.ndim == 1, op, ": ", name, " must be a flat 1-D view");
  check_sizes(op, name, t, {ref.sizes[0]});
}

// out[i] = f(in[i]...) for i < n. f takes scalars or 16-byte vectors alike: its selects
// compile to vector selects, and large outputs are streamed a vector at a time.
template <typename T, typename F, typename... In>
void map(int64_t n, int threads, const F& f, T* out, const In*... in) {
  using L = Lanes<T>;
  const bool streamed =
      kStreams && static_cast<int64_t>(sizeof...(In) + 1) * n * int64_t{sizeof(T)} >= kStreamBytes;
  parallel_for(ceil_div(n, kGrain), threads_for(n, kGrain, threads),
               [&](int, int64_t b, int64_t e) {
                 int64_t i = b * kGrain;
                 const int64_t end = std::min(n, e * kGrain);
                 if (streamed) {
                   for (; i < end && reinterpret_cast<uintptr_t>(out + i) % 16 != 0; ++i)
                     out[i] = f(in[i]...);
                   for (; i + L::n <= end; i += L::n) stream(out + i, f(L::load(in + i)...));
                   stream_fence();
                 }
                 for (; i < end; ++i) out[i] = f(in[i]...);
               });
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

}  // namespace

void relu_forward(const TensorView& input, const TensorView& output, int threads) {
  const char* op = "relu";
  check_threads(op, threads);
  check_flat(op, "input", input, input);
  check_flat(op, "output", output, input);
  if (input.dtype == DType::Float64)
    map(input.sizes[0], threads, kRelu, output.ptr<double>(), input.ptr<double>());
  else
    map(input.sizes[0], threads, kRelu, output.ptr<float>(), input.ptr<float>());
}

void relu_backward(const TensorView& grad_output, const TensorView& output,
                   const TensorView& grad_input, bool guided, int threads) {
  const char* op = guided ? "guided_relu_backward" : "relu_backward";
  check_threads(op, threads);
  check_flat(op, "grad_output", grad_output, grad_output);
  check_flat(op, "output", output, grad_output);
  check_flat(op, "grad_input", grad_input, grad_output);
  auto run = [&](auto* dx, const auto* dy, const auto* y) {
    if (guided)
      map(grad_output.sizes[0], threads, kGuidedBackward, dx, dy, y);
    else
      map(grad_output.sizes[0], threads, kReluBackward, dx, dy, y);
  };
  if (grad_output.dtype == DType::Float64)
    run(grad_input.ptr<double>(), grad_output.ptr<double>(), output.ptr<double>());
  else
    run(grad_input.ptr<float>(), grad_output.ptr<float>(), output.ptr<float>());
}

}  // namespace fastcnn::cpu
