// Global average pooling. NCHW: one warp per (n, c) plane, a shuffle reduction. NHWC: a
// block of 32 channels x 8 pixel rows, coalesced along C, reduced through shared memory.
// Sums are float for every dtype; the backward spreads dy / (H*W) in dx's memory order.
#include "cuda/checks.h"
#include "cuda/common.cuh"
#include "fastcnn/ops.h"

namespace fastcnn::cuda {
namespace {

struct GapShape {
  int64_t N, C, H, W;
  int64_t xs[4];  // element strides of n, c, h, w
  bool channels_last;
  // A dense tensor of this shape as rows whose elements share (NCHW: a plane's H * W) or take
  // in order (NHWC: a pixel's C) the values of one row of the [N, C] pooled tensor.
  FASTCNN_HD int64_t rows() const { return channels_last ? N * H * W : N * C; }
  FASTCNN_HD int64_t cols() const { return channels_last ? C : H * W; }
};

template <typename T>
__global__ void gap_forward_planes(const T* __restrict__ x, T* __restrict__ y, GapShape g) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  const int64_t hw = g.H * g.W;
  const float scale = 1.f / static_cast<float>(hw);
  for (int64_t plane = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; plane < g.N * g.C;
       plane += warps) {
    const T* p = x + plane / g.C * g.xs[0] + plane % g.C * g.xs[1];
    float sum = 0.f;
    for (int64_t i = lane; i < hw; i += 32) sum += to_float(p[i]);
#pragma unroll
    for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (lane == 0) y[plane] = from_float<T>(sum * scale);
  }
}

constexpr int kRows = 8;

template <typename T>
__global__ void gap_forward_channels_last(const T* __restrict__ x, T* __restrict__ y, GapShape g) {
  __shared__ float partial[kRows][32];
  const int64_t chunks = (g.C + 31) / 32;
  const int64_t c = blockIdx.x % chunks * 32 + threadIdx.x, n = blockIdx.x / chunks;
  const int64_t hw = g.H * g.W;
  float sum = 0.f;
  if (c < g.C) {
    const T* p = x + n * g.xs[0] + c;
    for (int64_t i = threadIdx.y; i < hw; i += kRows) sum += to_float(p[i * g.C]);
  }
  partial[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && c < g.C) {
    float total = 0.f;
#pragma unroll
    for (int r = 0; r < kRows; ++r) total += partial[r][threadIdx.x];
    y[n * g.C + c] = from_float<T>(total / static_cast<float>(hw));
  }
}

// dx, dense in its layout, by GapShape's rows: a warp per row, its lanes along the row
// (coalesced); no index division per element.
template <typename T>
__global__ void gap_backward(const T* __restrict__ dy, T* __restrict__ dx, GapShape g) {
  const int64_t hw = g.H * g.W, rows = g.rows(), cols = g.cols();
  const float scale = 1.f / static_cast<float>(hw);
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; row < rows; row += warps) {
    T* out = dx + row * cols;
    if (g.channels_last) {
      const T* src = dy + row / hw * g.C;
      for (int64_t c = lane; c < cols; c += 32) out[c] = from_float<T>(to_float(src[c]) * scale);
    } else {
      const T v = from_float<T>(to_float(dy[row]) * scale);
      for (int64_t i = lane; i < cols; i += 32) out[i] = v;
    }
  }
}

GapShape shape_of(const char* op, const char* name, const TensorView& t) {
  GapShape g{};
  const auto s = dense_strides_4d(op, name, t);
  for (int d = 0; d < 4; ++d) g.xs[d] = s[d];
  g.N = t.sizes[0], g.C = t.sizes[1], g.H = t.sizes[2], g.W = t.sizes[3];
  g.channels_last = is_channels_last(t);
  return g;
}

}  // namespace

void global_avg_pool2d_forward(const TensorView& input, const TensorView& output, void* stream) {
  const char* op = "global_avg_pool2d";
  const int device = cuda_device_of(op, "input", input);
  check_cuda_float(op, "input", input, device);
  const GapShape g = shape_of(op, "input", input);
  check_cuda_float(op, "output", output, device);
  check_same_dtype(op, "output", output, input);
  check_contiguous(op, "output", output);
  check_sizes(op, "output", output, {g.N, g.C});
  FASTCNN_CHECK(g.N * g.C == 0 || g.H * g.W > 0, op, ": input must have H, W >= 1, got ", g.H, "x",
                g.W);
  if (g.N * g.C == 0) return;
  DeviceGuard guard(device, op);
  dispatch_float(input.dtype, [&](auto t) {
    using T = decltype(t);
    if (g.channels_last)
      gap_forward_channels_last<T>
          <<<static_cast<unsigned>(ceil_div(g.C, 32) * g.N), dim3(32, kRows), 0,
             as_stream(stream)>>>(input.ptr<T>(), output.ptr<T>(), g);
    else
      gap_forward_planes<T><<<grid_for(g.N * g.C * 32, 256), 256, 0, as_stream(stream)>>>(
          input.ptr<T>(), output.ptr<T>(), g);
  });
  check_launch(op);
}

void global_avg_pool2d_backward(const TensorView& grad_output, const TensorView& grad_input,
                                void* stream) {
  const char* op = "global_avg_pool2d_backward";
  const int device = cuda_device_of(op, "grad_output", grad_output);
  check_cuda_float(op, "grad_output", grad_output, device);
  check_contiguous(op, "grad_output", grad_output);
  check_cuda_float(op, "grad_input", grad_input, device);
  check_same_dtype(op, "grad_input", grad_input, grad_output);
  const GapShape g = shape_of(op, "grad_input", grad_input);
  check_sizes(op, "grad_output", grad_output, {g.N, g.C});
  if (grad_input.numel() == 0) return;
  DeviceGuard guard(device, op);
  dispatch_float(grad_output.dtype, [&](auto t) {
    using T = decltype(t);
    gap_backward<T><<<grid_for(g.rows() * 32, 256), 256, 0, as_stream(stream)>>>(
        grad_output.ptr<T>(), grad_input.ptr<T>(), g);
  });
  check_launch(op);
}

}  // namespace fastcnn::cuda
