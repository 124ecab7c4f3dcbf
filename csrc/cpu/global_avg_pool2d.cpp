// Global average pooling: [N, C, H, W] -> [N, C], summed in double for float32 inputs. The
// sums run in the per-ISA kernels (cpu/global_avg_pool2d_kernels.h); the backward's
// broadcast is a plain store loop.
#include <algorithm>

#include "cpu/checks.h"
#include "cpu/global_avg_pool2d_kernels.h"
#include "cpu/isa_select.h"
#include "cpu/microkernel.h"
#include "cpu/parallel.h"
#include "fastcnn/ops.h"

namespace fastcnn::cpu {

const GapKernelSet& global_avg_pool2d_kernels() {
  static const GapKernelSet chosen = FASTCNN_FOR_CHOSEN_ISA(global_avg_pool2d_kernels);
  return chosen;
}

namespace {

struct GapGeom {
  int64_t N, C, HW;
  std::array<int64_t, 4> xs;
};

GapGeom validate(const char* op, const char* in_name, const TensorView& x, const char* out_name,
                 const TensorView& y) {
  check_cpu_float(op, in_name, x);
  check_cpu_float(op, out_name, y);
  check_same_dtype(op, out_name, y, x);
  GapGeom g{};
  g.xs = dense_strides_4d(op, in_name, x);
  g.N = x.sizes[0], g.C = x.sizes[1], g.HW = x.sizes[2] * x.sizes[3];
  check_contiguous(op, out_name, y);
  check_sizes(op, out_name, y, {g.N, g.C});
  FASTCNN_CHECK(g.HW > 0 || g.N * g.C == 0, op, ": ", in_name,
                " must have a non-empty spatial extent, got ", x.sizes[2], "x", x.sizes[3]);
  return g;
}

constexpr int64_t kChannelBlock = 256;

bool channels_innermost(const GapGeom& g) {
  return g.xs[1] == 1 && g.C > 1;
}

// Calls f(n, c0, c1) over (image, channel block) units split across threads.
template <typename F>
void for_each_block(const GapGeom& g, int threads, const F& f) {
  const int64_t blocks = ceil_div(g.C, kChannelBlock);
  const int nt = threads_for(g.N * g.C * g.HW, 1 << 15, threads);
  parallel_for(g.N * blocks, nt, [&](int, int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      const int64_t c0 = u % blocks * kChannelBlock;
      f(u / blocks, c0, std::min(g.C, c0 + kChannelBlock));
    }
  });
}

template <typename T>
const GapKernels<T>& kernels() {
  return for_dtype<T>(global_avg_pool2d_kernels());
}

// NCHW sums runs of whole planes; NHWC sums blocks of channels over an image's pixels.
template <typename T>
void forward(const GapGeom& g, const T* x, T* y, int threads) {
  const double scale = 1.0 / static_cast<double>(g.HW);
  const GapKernels<T>& k = kernels<T>();
  if (channels_innermost(g)) {
    for_each_block(g, threads, [&](int64_t n, int64_t c0, int64_t c1) {
      k.sum_pixels(x + n * g.xs[0], g.HW, g.C, c0, c1, scale, y + n * g.C);
    });
    return;
  }
  const int nt = threads_for(g.N * g.C * g.HW, 1 << 15, threads);
  parallel_for(g.N * g.C, nt, [&](int, int64_t b, int64_t e) {
    k.sum_planes(x + b * g.HW, e - b, g.HW, scale, y + b);
  });
}

template <typename T>
void backward(const GapGeom& g, const T* dy, T* dx, int threads) {
  const double scale = 1.0 / static_cast<double>(g.HW);
  if (channels_innermost(g)) {
    for_each_block(g, threads, [&](int64_t n, int64_t c0, int64_t c1) {
      T v[kChannelBlock];
      for (int64_t c = c0; c < c1; ++c) v[c - c0] = static_cast<T>(dy[n * g.C + c] * scale);
      for (int64_t i = 0; i < g.HW; ++i) {
        T* px = dx + n * g.xs[0] + i * g.xs[3];
        for (int64_t c = c0; c < c1; ++c) px[c] = v[c - c0];
      }
    });
    return;
  }
  const int nt = threads_for(g.N * g.C * g.HW, 1 << 15, threads);
  parallel_for(g.N * g.C, nt, [&](int, int64_t b, int64_t e) {
    for (int64_t nc = b; nc < e; ++nc) {
      T* plane = dx + nc / g.C * g.xs[0] + nc % g.C * g.xs[1];
      const T v = static_cast<T>(dy[nc] * scale);
      for (int64_t i = 0; i < g.HW; ++i) plane[i] = v;
    }
  });
}

}  // namespace

void global_avg_pool2d_forward(const TensorView& input, const TensorView& output, int threads) {
  check_threads("global_avg_pool2d", threads);
  const GapGeom g = validate("global_avg_pool2d", "input", input, "output", output);
  if (input.dtype == DType::Float64)
    forward(g, input.ptr<double>(), output.ptr<double>(), threads);
  else
    forward(g, input.ptr<float>(), output.ptr<float>(), threads);
}

void global_avg_pool2d_backward(const TensorView& grad_output, const TensorView& grad_input,
                                int threads) {
  check_threads("global_avg_pool2d_backward", threads);
  const GapGeom g =
      validate("global_avg_pool2d_backward", "grad_input", grad_input, "grad_output", grad_output);
  if (grad_input.dtype == DType::Float64)
    backward(g, grad_output.ptr<double>(), grad_input.ptr<double>(), threads);
  else
    backward(g, grad_output.ptr<float>(), grad_input.ptr<float>(), threads);
}

}  // namespace fastcnn::cpu
