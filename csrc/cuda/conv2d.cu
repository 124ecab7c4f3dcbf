// Convolution on CUDA: validation, the work plan, and the launches of the implicit-GEMM
// kernels (conv2d_ops.cuh: the passes; conv2d_simt.cuh: exact FP32; conv2d_mma.cuh: tensor
// cores; conv2d_pipelined.cuh: the channels_last forward on tensor cores, its operands staged
// by cp.async). Backward-weight splits its reduction over slices that write float partial
// sums to the workspace, then adds them in slice order: deterministic, no float atomics.
// One input channel per group (depthwise, or a single-channel input) runs direct kernels
// instead (conv2d_direct.cuh): a GEMM with one row per group would waste its tiles; so does
// backward-input with few channels per group (stems).
#include <algorithm>
#include <utility>

#include "cpu/conv2d_checks.h"
#include "cuda/checks.h"
#include "cuda/common.cuh"
#include "cuda/conv2d_direct.cuh"
#include "cuda/conv2d_mma.cuh"
#include "cuda/conv2d_ops.cuh"
#include "cuda/conv2d_pipelined.cuh"
#include "cuda/conv2d_simt.cuh"
#include "fastcnn/ops.h"

namespace fastcnn::cuda {
namespace {

using cpu::ConvNames;

// The checks of the CPU entry points (cpu/conv2d.cpp), with CUDA's device and dtype rules.
ConvGeom<int64_t> validate(const ConvNames& nm, const TensorView& x, const TensorView& w,
                           const TensorView& y, const Conv2dParams& p, int device) {
  using Named = std::pair<const char*, const TensorView*>;
  for (const Named& t : {Named{nm.image, &x}, Named{nm.weight, &w}, Named{nm.output, &y}})
    check_cuda_float(nm.op, t.first, *t.second, device);
  ConvGeom<int64_t> g{};
  const auto xs = dense_strides_4d(nm.op, nm.image, x);
  const auto ws = dense_strides_4d(nm.op, nm.weight, w);
  const auto ys = dense_strides_4d(nm.op, nm.output, y);
  for (int d = 0; d < 4; ++d) g.xs[d] = xs[d], g.ws[d] = ws[d], g.ys[d] = ys[d];
  check_same_dtype(nm.op, nm.weight, w, x);
  check_same_dtype(nm.op, nm.output, y, x);
  cpu::check_conv_geometry(nm, x, w, y, p, g);
  FASTCNN_CHECK(g.G <= 65535, nm.op, ": groups must be at most 65535 on CUDA, got ", g.G);
  FASTCNN_CHECK(g.R * g.S <= 65535, nm.op, ": ", nm.weight,
                " must have at most 65535 taps (R x S) on CUDA, got ", g.R, "x", g.S);
  g.x_cl = is_channels_last(x);
  g.y_cl = is_channels_last(y);
  g.w_rows_dense = weight_rows_dense(g);
  return g;
}

// Backward-input runs the direct kernel up to this many channels per group: the GEMM's
// 64-row tiles would hold C/groups rows (a 3-channel stem's: 3 of 64), and it reads every
// tap, where the direct kernel skips the taps a strided window never puts on the element.
constexpr int64_t kDirectInputMaxChannels = 4;

// Backward-weight's reduction split: enough blocks to fill a large GPU (a fixed target, so
// the result depends on the shapes alone, never on the device). The GEMM's slices hold at
// least 256 reduction steps. The direct depthwise kernel of an NHWC grad_output splits its
// blocks (32 filters x one tap) over slices of at least 1024 positions; its NCHW kernel
// reduces all positions in one block per (filter, tap).
struct Split {
  int64_t slices, chunk;
};
Split weight_split(const ConvGeom<int64_t>& g) {
  const int64_t depth = g.N * g.Ho * g.Wo;
  int64_t slices = 1, cap = 65535, align = 1;  // cap: the grid's z; align: chunk granularity
  if (g.Cg > 1) {
    const int64_t tiles = ceil_div(g.Kg, tiles::kBM) * ceil_div(g.Cg * g.R * g.S, tiles::kBN) * g.G;
    slices = std::min(ceil_div(2 * 132, tiles), ceil_div(depth, 256));
    cap = std::min<int64_t>(64, 65535 / g.G), align = 32;
  } else if (g.y_cl) {
    slices = std::min(ceil_div(4 * 132, ceil_div(g.K, 32) * g.R * g.S), ceil_div(depth, 1024));
  }
  slices = std::max<int64_t>(1, std::min(slices, cap));
  const int64_t chunk = std::max<int64_t>(1, ceil_div(ceil_div(depth, slices), align) * align);
  return {ceil_div(depth, chunk), chunk};
}

// Float partial sums [slice][K][Cg * R * S]; none where one block's reduction writes dW.
size_t weight_workspace_bytes(const ConvGeom<int64_t>& g) {
  const Split sp = weight_split(g);
  if (g.Cg == 1 && sp.slices == 1) return 0;
  return static_cast<size_t>(sp.slices * g.K * g.Cg * g.R * g.S) * sizeof(float);
}

template <typename I>
ConvGeom<I> narrow(const ConvGeom<int64_t>& g) {
  ConvGeom<I> n{};
  n.N = g.N, n.C = g.C, n.H = g.H, n.W = g.W, n.K = g.K, n.Ho = g.Ho, n.Wo = g.Wo;
  n.R = g.R, n.S = g.S, n.G = g.G, n.Cg = g.Cg, n.Kg = g.Kg;
  n.sh = g.sh, n.sw = g.sw, n.ph = g.ph, n.pw = g.pw, n.dh = g.dh, n.dw = g.dw;
  for (int d = 0; d < 4; ++d) n.xs[d] = g.xs[d], n.ws[d] = g.ws[d], n.ys[d] = g.ys[d];
  n.x_cl = g.x_cl, n.y_cl = g.y_cl, n.w_rows_dense = g.w_rows_dense;
  return n;
}

// Calls f(I{}): int32 index arithmetic when every flat position and partial index fits.
template <typename F>
void dispatch_index(const ConvGeom<int64_t>& g, int64_t extra, const F& f) {
  const int64_t largest =
      std::max({g.N * g.C * g.H * g.W, g.N * g.K * g.Ho * g.Wo, g.K * g.Cg * g.R * g.S, extra});
  // Margin for intermediate terms such as oh * sh + r * dh past the last position.
  if (largest < (int64_t{1} << 30))
    f(int32_t{});
  else
    f(int64_t{});
}

// Launches the GEMM of `op` over grid (column tiles, row tiles, groups x slices).
template <typename Op>
void launch_gemm(const Op& op, int64_t M, int64_t Ncol, int64_t slices, int64_t chunk,
                 bool tensor_cores, cudaStream_t stream, const char* name) {
  using I = typename Op::Index;
  FASTCNN_CHECK(ceil_div(M, tiles::kBM) <= 65535, name, ": too many rows (", M,
                ") for one launch; at most ", 65535 * tiles::kBM);
  const dim3 grid(static_cast<unsigned>(ceil_div(Ncol, tiles::kBN)),
                  static_cast<unsigned>(ceil_div(M, tiles::kBM)),
                  static_cast<unsigned>(op.g.G * slices));
  if (tensor_cores)
    conv_gemm_mma<Op><<<grid, mma::kThreads, 0, stream>>>(op, static_cast<I>(chunk));
  else
    conv_gemm_simt<Op><<<grid, tiles::kThreads, 0, stream>>>(op, static_cast<I>(chunk));
  check_launch(name);
}

// Tensor cores: always for float16 and bfloat16 (float32 accumulation), for float32 only
// when the caller allows TF32; on devices before sm_80 the kernel is not built for them.
bool use_tensor_cores(DType dtype, bool allow_tf32, const char* op) {
  if (dtype == DType::Float32 && !allow_tf32) return false;
  int device = 0, major = 0;
  check_cuda(cudaGetDevice(&device), op, "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), op,
             "cudaDeviceGetAttribute");
  return major >= 8;
}

template <typename T, typename I>
__global__ void reduce_slices(const float* __restrict__ partial, T* __restrict__ dw, ConvGeom<I> g,
                              I slices) {
  const I total = g.K * g.Cg * g.RS();
  const I step = static_cast<I>(gridDim.x) * blockDim.x;
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step)
    reduce_one(partial, dw, g, slices, i);
}

// Bias gradient, NCHW: one block per filter, sums over (n, pixel), a fixed-order tree.
template <typename T>
__global__ void bias_grad_planes(const T* __restrict__ dy, T* __restrict__ db, int64_t N, int64_t K,
                                 int64_t P) {
  __shared__ float partial[256];
  const int64_t k = blockIdx.x;
  float sum = 0.f;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t p = threadIdx.x; p < P; p += blockDim.x) sum += to_float(dy[(n * K + k) * P + p]);
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) db[k] = from_float<T>(partial[0]);
}

// Bias gradient, NHWC: a block of 32 filters x 32 rows, coalesced along K.
template <typename T>
__global__ void bias_grad_channels_last(const T* __restrict__ dy, T* __restrict__ db, int64_t rows,
                                        int64_t K) {
  __shared__ float partial[32][33];
  const int64_t k = blockIdx.x * 32 + threadIdx.x;
  float sum = 0.f;
  if (k < K)
    for (int64_t r = threadIdx.y; r < rows; r += 32) sum += to_float(dy[r * K + k]);
  partial[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && k < K) {
    float total = 0.f;
    for (int r = 0; r < 32; ++r) total += partial[r][threadIdx.x];
    db[k] = from_float<T>(total);
  }
}

}  // namespace

size_t conv2d_workspace_bytes(cpu::ConvPass pass, const TensorView& input, const TensorView& weight,
                              const TensorView& output, const Conv2dParams& p) {
  const ConvNames& nm = cpu::conv_names(pass);
  const int device = cuda_device_of(nm.op, nm.image, input);
  const ConvGeom<int64_t> g = validate(nm, input, weight, output, p, device);
  return pass == cpu::ConvPass::BackwardWeight ? weight_workspace_bytes(g) : 0;
}

void conv2d_forward(const TensorView& input, const TensorView& weight, const TensorView* bias,
                    const TensorView& output, const Conv2dParams& p, bool allow_tf32,
                    void* stream) {
  const ConvNames& nm = cpu::kConvForward;
  const int device = cuda_device_of(nm.op, nm.image, input);
  const ConvGeom<int64_t> g = validate(nm, input, weight, output, p, device);
  if (bias) {
    check_cuda_float(nm.op, "bias", *bias, device);
    check_same_dtype(nm.op, "bias", *bias, input);
    check_contiguous(nm.op, "bias", *bias);
    check_sizes(nm.op, "bias", *bias, {g.K});
  }
  if (output.numel() == 0) return;
  DeviceGuard guard(device, nm.op);
  const bool tc = use_tensor_cores(input.dtype, allow_tf32, nm.op);
  dispatch_float(input.dtype, [&](auto t) {
    using T = decltype(t);
    if (tc && pipelined::fits<T>(g, input.data, weight.data)) {
      const ForwardOp<T, int64_t> op{
          g,     input.ptr<T>(), weight.ptr<T>(), bias ? bias->ptr<T>() : nullptr, output.ptr<T>(),
          p.relu};
      return pipelined::launch_forward(op, as_stream(stream), nm.op);
    }
    dispatch_index(g, 0, [&](auto index) {
      using I = decltype(index);
      if (g.Cg == 1) {
        depthwise_forward<T, I><<<grid_for(output.numel(), 256), 256, 0, as_stream(stream)>>>(
            input.ptr<T>(), weight.ptr<T>(), bias ? bias->ptr<T>() : nullptr, output.ptr<T>(),
            narrow<I>(g), p.relu);
        return check_launch(nm.op);
      }
      const ForwardOp<T, I> op{narrow<I>(g),    input.ptr<T>(),
                               weight.ptr<T>(), bias ? bias->ptr<T>() : nullptr,
                               output.ptr<T>(), p.relu};
      launch_gemm(op, g.Kg, g.N * g.Ho * g.Wo, 1, g.Cg * g.R * g.S, tc, as_stream(stream), nm.op);
    });
  });
}

void conv2d_backward_input(const TensorView& grad_output, const TensorView& weight,
                           const TensorView& grad_input, const Conv2dParams& p, bool allow_tf32,
                           void* stream) {
  const ConvNames& nm = cpu::kConvBackwardInput;
  const int device = cuda_device_of(nm.op, nm.output, grad_output);
  const ConvGeom<int64_t> g = validate(nm, grad_input, weight, grad_output, p, device);
  if (grad_input.numel() == 0) return;
  DeviceGuard guard(device, nm.op);
  const bool tc = use_tensor_cores(grad_input.dtype, allow_tf32, nm.op);
  dispatch_float(grad_input.dtype, [&](auto t) {
    using T = decltype(t);
    dispatch_index(g, 0, [&](auto index) {
      using I = decltype(index);
      if (g.Cg <= kDirectInputMaxChannels) {
        direct_backward_input<T, I>
            <<<grid_for(grad_input.numel(), 256), 256, 0, as_stream(stream)>>>(
                grad_output.ptr<T>(), weight.ptr<T>(), grad_input.ptr<T>(), narrow<I>(g));
        return check_launch(nm.op);
      }
      const BackwardInputOp<T, I> op{narrow<I>(g), grad_output.ptr<T>(), weight.ptr<T>(),
                                     grad_input.ptr<T>()};
      launch_gemm(op, g.Cg, g.N * g.H * g.W, 1, g.Kg * g.R * g.S, tc, as_stream(stream), nm.op);
    });
  });
}

void conv2d_backward_weight(const TensorView& grad_output, const TensorView& input,
                            const TensorView& grad_weight, const Conv2dParams& p,
                            const TensorView* workspace, bool allow_tf32, void* stream) {
  const ConvNames& nm = cpu::kConvBackwardWeight;
  const int device = cuda_device_of(nm.op, nm.image, input);
  const ConvGeom<int64_t> g = validate(nm, input, grad_weight, grad_output, p, device);
  const size_t needed = weight_workspace_bytes(g);
  check_workspace(nm.op, workspace, needed, device);
  DeviceGuard guard(device, nm.op);
  const cudaStream_t s = as_stream(stream);
  if (g.N == 0) {
    check_cuda(
        cudaMemsetAsync(grad_weight.data, 0, grad_weight.numel() * dtype_size(input.dtype), s),
        nm.op, "cudaMemsetAsync");
    return;
  }
  const Split sp = weight_split(g);
  const bool tc = use_tensor_cores(input.dtype, allow_tf32, nm.op);
  auto* partial = needed ? static_cast<float*>(workspace->data) : nullptr;
  dispatch_float(input.dtype, [&](auto t) {
    using T = decltype(t);
    dispatch_index(g, static_cast<int64_t>(needed / sizeof(float)), [&](auto index) {
      using I = decltype(index);
      if (g.Cg == 1) {
        const auto taps = static_cast<unsigned>(g.R * g.S);
        if (g.y_cl)
          depthwise_backward_weight_channels<T, I>
              <<<dim3(static_cast<unsigned>(ceil_div(g.K, 32)), taps,
                      static_cast<unsigned>(sp.slices)),
                 dim3(32, 8), 0, s>>>(grad_output.ptr<T>(), input.ptr<T>(), grad_weight.ptr<T>(),
                                      partial, narrow<I>(g), static_cast<I>(sp.chunk));
        else
          depthwise_backward_weight_planes<T, I>
              <<<dim3(static_cast<unsigned>(g.K), taps), 256, 0, s>>>(
                  grad_output.ptr<T>(), input.ptr<T>(), grad_weight.ptr<T>(), narrow<I>(g));
        check_launch(nm.op);
        if (!partial) return;
      } else {
        const BackwardWeightOp<T, I> op{narrow<I>(g), grad_output.ptr<T>(), input.ptr<T>(),
                                        partial};
        launch_gemm(op, g.Kg, g.Cg * g.R * g.S, sp.slices, sp.chunk, tc, s, nm.op);
      }
      reduce_slices<T, I><<<grid_for(g.K * g.Cg * g.R * g.S, 256), 256, 0, s>>>(
          partial, grad_weight.ptr<T>(), narrow<I>(g), static_cast<I>(sp.slices));
      check_launch(nm.op);
    });
  });
}

void conv2d_backward_bias(const TensorView& grad_output, const TensorView& grad_bias,
                          void* stream) {
  const char* op = "conv2d_backward_bias";
  const int device = cuda_device_of(op, "grad_output", grad_output);
  check_cuda_float(op, "grad_output", grad_output, device);
  dense_strides_4d(op, "grad_output", grad_output);
  check_cuda_float(op, "grad_bias", grad_bias, device);
  check_same_dtype(op, "grad_bias", grad_bias, grad_output);
  check_contiguous(op, "grad_bias", grad_bias);
  const int64_t N = grad_output.sizes[0], K = grad_output.sizes[1],
                P = grad_output.sizes[2] * grad_output.sizes[3];
  check_sizes(op, "grad_bias", grad_bias, {K});
  if (K == 0) return;
  DeviceGuard guard(device, op);
  const cudaStream_t s = as_stream(stream);
  dispatch_float(grad_output.dtype, [&](auto t) {
    using T = decltype(t);
    if (is_channels_last(grad_output))
      bias_grad_channels_last<T><<<static_cast<unsigned>(ceil_div(K, 32)), dim3(32, 32), 0, s>>>(
          grad_output.ptr<T>(), grad_bias.ptr<T>(), N * P, K);
    else
      bias_grad_planes<T><<<static_cast<unsigned>(K), 256, 0, s>>>(grad_output.ptr<T>(),
                                                                   grad_bias.ptr<T>(), N, K, P);
  });
  check_launch(op);
}

}  // namespace fastcnn::cuda
