// Global average pooling: [N, C, H, W] -> [N, C], summed in double for float32 inputs.
#include <vector>

#include "cpu/checks.h"
#include "cpu/parallel.h"
#include "fastcnn/ops.h"

namespace fastcnn::cpu {
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

// Planes (n, c) are split over threads; in NHWC order a thread sums its channels over pixels.
template <typename T>
void forward(const GapGeom& g, const T* x, T* y, int threads) {
  const int nt = threads_for(g.N * g.C * g.HW, 1 << 15, threads);
  const int64_t pix_stride = g.xs[3];  // dense: pixel p of a plane is at p * stride of w
  parallel_for(g.N * g.C, nt, [&](int, int64_t b, int64_t e) {
    for (int64_t nc = b; nc < e; ++nc) {
      const T* plane = x + nc / g.C * g.xs[0] + nc % g.C * g.xs[1];
      double sum = 0;
      for (int64_t i = 0; i < g.HW; ++i) sum += plane[i * pix_stride];
      y[nc] = static_cast<T>(sum / static_cast<double>(g.HW));
    }
  });
}

template <typename T>
void backward(const GapGeom& g, const T* dy, T* dx, int threads) {
  const int nt = threads_for(g.N * g.C * g.HW, 1 << 15, threads);
  const int64_t pix_stride = g.xs[3];
  parallel_for(g.N * g.C, nt, [&](int, int64_t b, int64_t e) {
    for (int64_t nc = b; nc < e; ++nc) {
      T* plane = dx + nc / g.C * g.xs[0] + nc % g.C * g.xs[1];
      const T v = static_cast<T>(dy[nc] / static_cast<double>(g.HW));
      for (int64_t i = 0; i < g.HW; ++i) plane[i * pix_stride] = v;
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
