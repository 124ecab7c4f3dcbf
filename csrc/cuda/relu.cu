// ReLU and its backward (plain and guided) over flat element ranges: grid-stride loops over
// 16-byte vectors when every pointer allows it, element by element otherwise.
#include "cuda/checks.h"
#include "cuda/common.cuh"
#include "fastcnn/ops.h"

namespace fastcnn::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

struct ReluForward {
  // v < 0 is false for NaN, so NaN passes through as in torch.relu.
  __device__ float operator()(float v) const { return v < 0.f ? 0.f : v; }
};

template <bool kGuided>
struct ReluBackward {
  // As torch's threshold_backward: the gradient passes where output > 0 (or is NaN);
  // guided also clamps the gradient at 0 (a NaN gradient stays NaN, as clamp does).
  __device__ float operator()(float g, float out) const {
    return out <= 0.f || (kGuided && g < 0.f) ? 0.f : g;
  }
};

template <typename T, int V, typename F>
__global__ void unary_kernel(const T* __restrict__ a, T* __restrict__ out, int64_t n, F f) {
  using P = Pack<T, V>;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t vectors = n / V;
  for (int64_t i = first; i < vectors; i += step) {
    const P pa = reinterpret_cast<const P*>(a)[i];
    P r;
#pragma unroll
    for (int k = 0; k < V; ++k) r.v[k] = from_float<T>(f(to_float(pa.v[k])));
    reinterpret_cast<P*>(out)[i] = r;
  }
  for (int64_t i = vectors * V + first; i < n; i += step) out[i] = from_float<T>(f(to_float(a[i])));
}

template <typename T, int V, typename F>
__global__ void binary_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out,
                              int64_t n, F f) {
  using P = Pack<T, V>;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t vectors = n / V;
  for (int64_t i = first; i < vectors; i += step) {
    const P pa = reinterpret_cast<const P*>(a)[i];
    const P pb = reinterpret_cast<const P*>(b)[i];
    P r;
#pragma unroll
    for (int k = 0; k < V; ++k) r.v[k] = from_float<T>(f(to_float(pa.v[k]), to_float(pb.v[k])));
    reinterpret_cast<P*>(out)[i] = r;
  }
  for (int64_t i = vectors * V + first; i < n; i += step)
    out[i] = from_float<T>(f(to_float(a[i]), to_float(b[i])));
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

void check_flat(const char* op, const char* name, const TensorView& t, const TensorView& ref,
                int device) {
  check_cuda_float(op, name, t, device);
  check_same_dtype(op, name, t, ref);
  check_contiguous(op, name, t);
  FASTCNN_CHECK(t.ndim == 1, op, ": ", name, " must be a flat 1-D view");
  check_sizes(op, name, t, {ref.sizes[0]});
}

}  // namespace

void relu_forward(const TensorView& input, const TensorView& output, void* stream) {
  const char* op = "relu";
  const int device = cuda_device_of(op, "input", input);
  check_flat(op, "input", input, input, device);
  check_flat(op, "output", output, input, device);
  const int64_t n = input.sizes[0];
  if (n == 0) return;
  DeviceGuard guard(device, op);
  dispatch_float(input.dtype, [&](auto t) {
    using T = decltype(t);
    constexpr int V = 16 / sizeof(T);
    const T* x = input.ptr<T>();
    T* y = output.ptr<T>();
    if (aligned16(x) && aligned16(y))
      unary_kernel<T, V><<<grid_for(n / V + 1, kThreads), kThreads, 0, as_stream(stream)>>>(
          x, y, n, ReluForward{});
    else
      unary_kernel<T, 1>
          <<<grid_for(n, kThreads), kThreads, 0, as_stream(stream)>>>(x, y, n, ReluForward{});
  });
  check_launch(op);
}

void relu_backward(const TensorView& grad_output, const TensorView& output,
                   const TensorView& grad_input, bool guided, void* stream) {
  const char* op = guided ? "guided_relu_backward" : "relu_backward";
  const int device = cuda_device_of(op, "grad_output", grad_output);
  check_flat(op, "grad_output", grad_output, grad_output, device);
  check_flat(op, "output", output, grad_output, device);
  check_flat(op, "grad_input", grad_input, grad_output, device);
  const int64_t n = grad_output.sizes[0];
  if (n == 0) return;
  DeviceGuard guard(device, op);
  dispatch_float(grad_output.dtype, [&](auto t) {
    using T = decltype(t);
    const T* dy = grad_output.ptr<T>();
    const T* y = output.ptr<T>();
    T* dx = grad_input.ptr<T>();
    auto launch = [&](auto f) {
      constexpr int V = 16 / sizeof(T);
      if (aligned16(dy) && aligned16(y) && aligned16(dx))
        binary_kernel<T, V>
            <<<grid_for(n / V + 1, kThreads), kThreads, 0, as_stream(stream)>>>(dy, y, dx, n, f);
      else
        binary_kernel<T, 1>
            <<<grid_for(n, kThreads), kThreads, 0, as_stream(stream)>>>(dy, y, dx, n, f);
    };
    if (guided)
      launch(ReluBackward<true>{});
    else
      launch(ReluBackward<false>{});
  });
  check_launch(op);
}

}  // namespace fastcnn::cuda
