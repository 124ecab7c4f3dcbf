// ReLU and its backward over flat, contiguous element ranges (any dense layout flattens).
#include <type_traits>

#include "cpu/checks.h"
#include "cpu/parallel.h"
#include "fastcnn/ops.h"

namespace fastcnn::cpu {
namespace {

constexpr int64_t kGrain = 1 << 16;

void check_flat(const char* op, const char* name, const TensorView& t, const TensorView& ref) {
  check_cpu_float(op, name, t);
  check_same_dtype(op, name, t, ref);
  check_contiguous(op, name, t);
  FASTCNN_CHECK(t.ndim == 1, op, ": ", name, " must be a flat 1-D view");
  check_sizes(op, name, t, {ref.sizes[0]});
}

template <typename T, typename F>
void elementwise(int64_t n, int threads, const F& f) {
  parallel_for(ceil_div(n, kGrain), threads_for(n, kGrain, threads),
               [&](int, int64_t b, int64_t e) {
                 const int64_t end = std::min(n, e * kGrain);
                 for (int64_t i = b * kGrain; i < end; ++i) f(i);
               });
}

}  // namespace

void relu_forward(const TensorView& input, const TensorView& output, int threads) {
  const char* op = "relu";
  check_threads(op, threads);
  check_flat(op, "input", input, input);
  check_flat(op, "output", output, input);
  auto run = [&](const auto* __restrict x, auto* __restrict y) {
    using T = std::decay_t<decltype(*y)>;
    // v < 0 is false for NaN, so NaN passes through as in torch.relu.
    elementwise<T>(input.sizes[0], threads, [&](int64_t i) {
      const T v = x[i];
      y[i] = v < T(0) ? T(0) : v;
    });
  };
  if (input.dtype == DType::Float64)
    run(input.ptr<double>(), output.ptr<double>());
  else
    run(input.ptr<float>(), output.ptr<float>());
}

void relu_backward(const TensorView& grad_output, const TensorView& output,
                   const TensorView& grad_input, bool guided, int threads) {
  const char* op = guided ? "guided_relu_backward" : "relu_backward";
  check_threads(op, threads);
  check_flat(op, "grad_output", grad_output, grad_output);
  check_flat(op, "output", output, grad_output);
  check_flat(op, "grad_input", grad_input, grad_output);
  auto run = [&](const auto* __restrict dy, const auto* __restrict y, auto* __restrict dx) {
    using T = std::decay_t<decltype(*dx)>;
    // As torch's threshold_backward: the gradient passes where output > 0 (or is NaN).
    // Guided: additionally clamp the gradient at 0 (NaN gradients stay NaN, as clamp does).
    // Both operands are loaded unconditionally so the choice compiles to a vector select.
    if (guided)
      elementwise<T>(grad_output.sizes[0], threads, [&](int64_t i) {
        const T g = dy[i], out = y[i];
        dx[i] = out <= T(0) || g < T(0) ? T(0) : g;
      });
    else
      elementwise<T>(grad_output.sizes[0], threads, [&](int64_t i) {
        const T g = dy[i], out = y[i];
        dx[i] = out <= T(0) ? T(0) : g;
      });
  };
  if (grad_output.dtype == DType::Float64)
    run(grad_output.ptr<double>(), output.ptr<double>(), grad_input.ptr<double>());
  else
    run(grad_output.ptr<float>(), output.ptr<float>(), grad_input.ptr<float>());
}

}  // namespace fastcnn::cpu
