// Max pooling, NCHW and channels_last, with torch's semantics: the first maximum in window
// order wins ties, a NaN wins, padding is -inf, dilation and ceil_mode as in torch.
//
// What the forward saves for the backward (`saved`):
//   - int64 indices (flat h * W + w per plane, torch's convention) when the caller asked
//     for indices; -1 marks a window that holds no input element;
//   - otherwise compact window offsets r * kw + s: uint8 when the window has fewer than 256
//     taps, int32 otherwise; kh * kw marks a window without input element;
//   - or nothing, and the backward recomputes each window's argmax from the input.
// The backward scatters dy into dx (zeroed first) from the saved argmax: plain stores when
// windows cannot overlap, float32 atomics when they can. The deterministic backward, and
// float16 / bfloat16 with overlapping windows, instead gather: each input element sums in
// float, in a fixed order, dy of the windows whose argmax it is.
#include <algorithm>
#include <type_traits>

#include "cuda/checks.h"
#include "cuda/common.cuh"
#include "cuda/max_pool2d_window.cuh"
#include "fastcnn/ops.h"

namespace fastcnn::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T, typename S, typename Index>
__global__ void forward_kernel(const T* __restrict__ x, T* __restrict__ y, S* __restrict__ saved,
                               PoolShape g) {
  const Index total = static_cast<Index>(g.N * g.C * g.Ho * g.Wo);
  const Index step = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step)
    forward_one<T, S, Index>(x, y, saved, g, i);
}

template <typename T, typename S, typename Index, bool kAtomic>
__global__ void backward_scatter_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                        const S* __restrict__ saved, T* __restrict__ dx,
                                        PoolShape g) {
  const Index total = static_cast<Index>(g.N * g.C * g.Ho * g.Wo);
  const Index step = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    Index dst;
    if (!scatter_target<T, S, Index>(x, saved, g, i, dst)) continue;
    if constexpr (kAtomic)
      atomicAdd(dx + dst, dy[i]);
    else
      dx[dst] = dy[i];
  }
}

template <typename T, typename S, typename Index>
__global__ void backward_gather_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                       const S* __restrict__ saved, T* __restrict__ dx,
                                       PoolShape g) {
  const Index total = static_cast<Index>(g.N * g.C * g.H * g.W);
  const Index step = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step)
    dx[i] = from_float<T>(gather_one<T, S, Index>(dy, x, saved, g, i));
}

PoolShape validate(const char* op, const char* in_name, const TensorView& x, const char* out_name,
                   const TensorView& y, const TensorView* saved, const Pool2dParams& p,
                   int device) {
  check_cuda_float(op, in_name, x, device);
  check_cuda_float(op, out_name, y, device);
  check_same_dtype(op, out_name, y, x);
  PoolShape g{};
  const auto xs = dense_strides_4d(op, in_name, x), ys = dense_strides_4d(op, out_name, y);
  for (int d = 0; d < 4; ++d) g.xs[d] = xs[d], g.ys[d] = ys[d];
  for (int i = 0; i < 2; ++i) {
    FASTCNN_CHECK(p.kernel[i] >= 1, op, ": kernel_size must be >= 1, got ", p.kernel[i]);
    FASTCNN_CHECK(p.stride[i] >= 1, op, ": stride must be >= 1, got ", p.stride[i]);
    FASTCNN_CHECK(p.dilation[i] >= 1, op, ": dilation must be >= 1, got ", p.dilation[i]);
    FASTCNN_CHECK(p.padding[i] >= 0 && p.padding[i] <= p.kernel[i] / 2, op,
                  ": padding must be >= 0 and at most half the kernel size (", p.kernel[i] / 2,
                  "), got ", p.padding[i]);
    FASTCNN_CHECK(p.kernel[i] * p.dilation[i] < (int64_t{1} << 30) && p.stride[i] < (1 << 30), op,
                  ": kernel_size, stride and dilation must be below 2^30");
  }
  g.N = x.sizes[0], g.C = x.sizes[1], g.H = x.sizes[2], g.W = x.sizes[3];
  g.Ho = pool_out_size(g.H, p.kernel[0], p.stride[0], p.padding[0], p.dilation[0], p.ceil_mode);
  g.Wo = pool_out_size(g.W, p.kernel[1], p.stride[1], p.padding[1], p.dilation[1], p.ceil_mode);
  FASTCNN_CHECK(g.Ho >= 1 && g.Wo >= 1, op, ": the output would be empty (", g.Ho, "x", g.Wo,
                ") for input ", g.H, "x", g.W);
  check_sizes(op, out_name, y, {g.N, g.C, g.Ho, g.Wo});
  g.kh = static_cast<int>(p.kernel[0]), g.kw = static_cast<int>(p.kernel[1]);
  g.sh = static_cast<int>(p.stride[0]), g.sw = static_cast<int>(p.stride[1]);
  g.ph = static_cast<int>(p.padding[0]), g.pw = static_cast<int>(p.padding[1]);
  g.dh = static_cast<int>(p.dilation[0]), g.dw = static_cast<int>(p.dilation[1]);
  g.x_channels_last = is_channels_last(x);
  g.y_channels_last = is_channels_last(y);
  if (saved) {
    const int64_t taps = p.kernel[0] * p.kernel[1];
    check_cuda_tensor(op, "indices", *saved, device);
    FASTCNN_CHECK_TYPE(saved->dtype == DType::Int64 || saved->dtype == DType::Int32 ||
                           (saved->dtype == DType::UInt8 && taps < 256),
                       op,
                       ": indices must be int64 (plane positions) or window offsets (uint8 for "
                       "windows of fewer than 256 taps, else int32), got ",
                       dtype_name(saved->dtype), " for a window of ", taps, " taps");
    check_sizes(op, "indices", *saved, {g.N, g.C, g.Ho, g.Wo});
    FASTCNN_CHECK(dense_strides_4d(op, "indices", *saved) == ys, op,
                  ": indices must have the memory format of ", out_name);
  }
  return g;
}

// Calls f(S{}) with the saved tensor's element type (NoSaved without one).
template <typename F>
void dispatch_saved(const TensorView* saved, const F& f) {
  if (!saved) return f(NoSaved{});
  switch (saved->dtype) {
    case DType::Int64: return f(int64_t{});
    case DType::Int32: return f(int32_t{});
    default: return f(uint8_t{});
  }
}

// Calls f(Index{}): 32-bit index arithmetic when every flat position fits, else 64-bit.
template <typename F>
void dispatch_index(int64_t largest, const F& f) {
  if (largest < (int64_t{1} << 31) - (int64_t{1} << 24))
    f(int32_t{});
  else
    f(int64_t{});
}

template <typename S>
S* saved_ptr(const TensorView* saved) {
  if constexpr (std::is_same_v<S, NoSaved>)
    return nullptr;
  else
    return saved->ptr<S>();
}

}  // namespace

void max_pool2d_forward(const TensorView& input, const TensorView& output, const TensorView* saved,
                        const Pool2dParams& p, void* stream) {
  const char* op = "max_pool2d";
  const int device = cuda_device_of(op, "input", input);
  const PoolShape g = validate(op, "input", input, "output", output, saved, p, device);
  if (output.numel() == 0) return;
  DeviceGuard guard(device, op);
  dispatch_float(input.dtype, [&](auto t) {
    using T = decltype(t);
    dispatch_saved(saved, [&](auto s) {
      using S = decltype(s);
      dispatch_index(std::max(input.numel(), output.numel()), [&](auto index) {
        using Index = decltype(index);
        forward_kernel<T, S, Index>
            <<<grid_for(output.numel(), kThreads), kThreads, 0, as_stream(stream)>>>(
                input.ptr<T>(), output.ptr<T>(), saved_ptr<S>(saved), g);
      });
    });
  });
  check_launch(op);
}

void max_pool2d_backward(const TensorView& grad_output, const TensorView& input,
                         const TensorView* saved, const TensorView& grad_input,
                         const Pool2dParams& p, bool deterministic, void* stream) {
  const char* op = "max_pool2d_backward";
  const int device = cuda_device_of(op, "input", input);
  const PoolShape g = validate(op, "input", input, "grad_output", grad_output, saved, p, device);
  check_cuda_float(op, "grad_input", grad_input, device);
  check_same_dtype(op, "grad_input", grad_input, input);
  check_sizes(op, "grad_input", grad_input, {g.N, g.C, g.H, g.W});
  const auto dxs = dense_strides_4d(op, "grad_input", grad_input);
  FASTCNN_CHECK(dxs == dense_strides_4d(op, "input", input), op,
                ": grad_input must have the shape and memory format of input");
  if (grad_input.numel() == 0) return;
  DeviceGuard guard(device, op);
  const cudaStream_t s = as_stream(stream);
  // Windows overlap when a stride is shorter than the dilated window's extent. Where they
  // do, float16 / bfloat16 gather too: atomics would round every partial sum to 8 or 11 bits.
  const bool overlap = g.sh < (g.kh - 1) * g.dh + 1 || g.sw < (g.kw - 1) * g.dw + 1;
  const bool gather = overlap && (deterministic || input.dtype != DType::Float32);
  if (!gather) {
    check_cuda(cudaMemsetAsync(grad_input.data, 0, grad_input.numel() * dtype_size(input.dtype), s),
               op, "cudaMemsetAsync");
  }
  dispatch_float(input.dtype, [&](auto t) {
    using T = decltype(t);
    dispatch_saved(saved, [&](auto sv) {
      using S = decltype(sv);
      dispatch_index(std::max(input.numel(), grad_output.numel()), [&](auto index) {
        using Index = decltype(index);
        const T *dy = grad_output.ptr<T>(), *x = input.ptr<T>();
        const S* sp = saved_ptr<S>(saved);
        T* dx = grad_input.ptr<T>();
        const unsigned blocks_in = grid_for(grad_input.numel(), kThreads),
                       blocks_out = grid_for(grad_output.numel(), kThreads);
        if (gather) {
          backward_gather_kernel<T, S, Index><<<blocks_in, kThreads, 0, s>>>(dy, x, sp, dx, g);
        } else if (!overlap) {
          backward_scatter_kernel<T, S, Index, false>
              <<<blocks_out, kThreads, 0, s>>>(dy, x, sp, dx, g);
        } else if constexpr (std::is_same_v<T, float>) {  // the only dtype scattered atomically
          backward_scatter_kernel<T, S, Index, true>
              <<<blocks_out, kThreads, 0, s>>>(dy, x, sp, dx, g);
        }
      });
    });
  });
  check_launch(op);
}

}  // namespace fastcnn::cuda
