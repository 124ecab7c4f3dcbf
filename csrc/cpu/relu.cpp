// ReLU and its backward over flat, contiguous element ranges (any dense layout flattens).
#include <unistd.h>

#include <algorithm>
#include <cstdint>

#include "cpu/checks.h"
#include "cpu/isa_select.h"
#include "cpu/parallel.h"
#include "cpu/relu_kernels.h"
#include "fastcnn/ops.h"

namespace fastcnn::cpu {

const ReluKernelSet& relu_kernels() {
  static const ReluKernelSet chosen = FASTCNN_FOR_CHOSEN_ISA(relu_kernels);
  return chosen;
}

namespace {

constexpr int64_t kGrain = 1 << 16;

// Ops whose operands and output together take at least stream_bytes() write their output
// with non-temporal stores: it would not stay in cache anyway, and ordinary stores read every
// output line before writing it. From 64 MiB on every CPU measured gained (relu backward over
// 25.7 MB operands, 77 MB in all: 1.52 -> 1.04 ms on a Zen 4 with a 32 MB L3). Below that the
// CPUs differ: relu forward over the same operands (51 MB in all) measured slower streamed on
// that Zen 4 (0.93 -> 1.08 ms) and faster on an Ice Lake Xeon with a 48 MB L3 (2.1-2.4 ->
// 1.4-1.5 ms), so Intel CPUs stream from their L3's size on (at most 64 MiB).
constexpr int64_t kStreamBytes = int64_t{64} << 20;

#if defined(FASTCNN_X86)
// The L3's size as the C library reports it; kStreamBytes where it reports none.
int64_t l3_bytes() {
#if defined(_SC_LEVEL3_CACHE_SIZE)
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (l3 > 0) return l3;
#endif
  return kStreamBytes;
}
#endif

int64_t stream_bytes() {
  static const int64_t bytes = [] {
#if defined(FASTCNN_X86)
    __builtin_cpu_init();
    if (__builtin_cpu_is("intel")) return std::min(kStreamBytes, l3_bytes());
#endif
    return kStreamBytes;
  }();
  return bytes;
}

void check_flat(const char* op, const char* name, const TensorView& t, const TensorView& ref) {
  check_cpu_float(op, name, t);
  check_same_dtype(op, name, t, ref);
  check_contiguous(op, name, t);
  FASTCNN_CHECK(t.ndim == 1, op, ": ", name, " must be a flat 1-D view");
  check_sizes(op, name, t, {ref.sizes[0]});
}

// Calls run(b, e, streamed) over chunks [b, e) of n elements split over the threads;
// `tensors` is how many n-element tensors the op reads and writes.
template <typename T, typename F>
void for_each_range(int64_t n, int tensors, int threads, const F& run) {
  const bool streamed = tensors * n * int64_t{sizeof(T)} >= stream_bytes();
  parallel_for(ceil_div(n, kGrain), threads_for(n, kGrain, threads),
               [&](int, int64_t b, int64_t e) {
                 const int64_t begin = b * kGrain;
                 run(begin, std::min(n, e * kGrain) - begin, streamed);
               });
}

template <typename T>
void forward(int64_t n, const T* x, T* y, int threads) {
  const ReluKernels<T>& k = for_dtype<T>(relu_kernels());
  for_each_range<T>(n, 2, threads, [&](int64_t at, int64_t len, bool streamed) {
    k.forward(len, x + at, y + at, streamed);
  });
}

template <typename T>
void backward(int64_t n, const T* dy, const T* y, T* dx, bool guided, int threads) {
  const ReluKernels<T>& k = for_dtype<T>(relu_kernels());
  for_each_range<T>(n, 3, threads, [&](int64_t at, int64_t len, bool streamed) {
    k.backward(len, dy + at, y + at, dx + at, guided, streamed);
  });
}

}  // namespace

void relu_forward(const TensorView& input, const TensorView& output, int threads) {
  const char* op = "relu";
  check_threads(op, threads);
  check_flat(op, "input", input, input);
  check_flat(op, "output", output, input);
  if (input.dtype == DType::Float64)
    forward(input.sizes[0], input.ptr<double>(), output.ptr<double>(), threads);
  else
    forward(input.sizes[0], input.ptr<float>(), output.ptr<float>(), threads);
}

void relu_backward(const TensorView& grad_output, const TensorView& output,
                   const TensorView& grad_input, bool guided, int threads) {
  const char* op = guided ? "guided_relu_backward" : "relu_backward";
  check_threads(op, threads);
  check_flat(op, "grad_output", grad_output, grad_output);
  check_flat(op, "output", output, grad_output);
  check_flat(op, "grad_input", grad_input, grad_output);
  const int64_t n = grad_output.sizes[0];
  if (grad_output.dtype == DType::Float64)
    backward(n, grad_output.ptr<double>(), output.ptr<double>(), grad_input.ptr<double>(), guided,
             threads);
  else
    backward(n, grad_output.ptr<float>(), output.ptr<float>(), grad_input.ptr<float>(), guided,
             threads);
}

}  // namespace fastcnn::cpu
