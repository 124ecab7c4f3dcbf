// Max pooling. Ties keep the first maximum in window order and NaN wins, as in torch, so
// the backward can recompute the argmax from the input instead of storing indices.
// Indices are flat (h * W + w) per plane; -1 marks a window with no input element.
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>

#include "cpu/checks.h"
#include "cpu/parallel.h"
#include "fastcnn/ops.h"

namespace fastcnn {

int64_t pool_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation,
                      bool ceil_mode) {
  const int64_t num = in + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  int64_t out = (num >= 0 ? num / stride : -((-num + stride - 1) / stride)) + 1;
  // The last window must start inside the input or its left padding.
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

namespace cpu {
namespace {

struct PoolGeom {
  int64_t N, C, H, W, Ho, Wo;
  std::array<int64_t, 4> xs, ys;
  bool channels_last;
};

PoolGeom validate(const char* op, const char* in_name, const TensorView& x, const char* out_name,
                  const TensorView& y, const TensorView* indices, const Pool2dParams& p) {
  check_cpu_float(op, in_name, x);
  check_cpu_float(op, out_name, y);
  check_same_dtype(op, out_name, y, x);
  PoolGeom g{};
  g.xs = dense_strides_4d(op, in_name, x);
  g.ys = dense_strides_4d(op, out_name, y);
  for (int i = 0; i < 2; ++i) {
    FASTCNN_CHECK(p.kernel[i] >= 1, op, ": kernel_size must be >= 1, got ", p.kernel[i]);
    FASTCNN_CHECK(p.stride[i] >= 1, op, ": stride must be >= 1, got ", p.stride[i]);
    FASTCNN_CHECK(p.dilation[i] >= 1, op, ": dilation must be >= 1, got ", p.dilation[i]);
    FASTCNN_CHECK(p.padding[i] >= 0 && p.padding[i] <= p.kernel[i] / 2, op,
                  ": padding must be >= 0 and at most half the kernel size (", p.kernel[i] / 2,
                  "), got ", p.padding[i]);
  }
  g.N = x.sizes[0], g.C = x.sizes[1], g.H = x.sizes[2], g.W = x.sizes[3];
  g.Ho = pool_out_size(g.H, p.kernel[0], p.stride[0], p.padding[0], p.dilation[0], p.ceil_mode);
  g.Wo = pool_out_size(g.W, p.kernel[1], p.stride[1], p.padding[1], p.dilation[1], p.ceil_mode);
  FASTCNN_CHECK(g.Ho >= 1 && g.Wo >= 1, op, ": the output would be empty (", g.Ho, "x", g.Wo,
                ") for input ", g.H, "x", g.W);
  check_sizes(op, out_name, y, {g.N, g.C, g.Ho, g.Wo});
  if (indices) {
    check_cpu(op, "indices", *indices);
    FASTCNN_CHECK_TYPE(indices->dtype == DType::Int64, op, ": indices must be int64, got ",
                       dtype_name(indices->dtype));
    check_sizes(op, "indices", *indices, {g.N, g.C, g.Ho, g.Wo});
    FASTCNN_CHECK(dense_strides_4d(op, "indices", *indices) == g.ys, op,
                  ": indices must have the memory format of ", out_name);
  }
  g.channels_last = is_channels_last(y);
  return g;
}

template <typename T>
struct Window {
  T value;
  int64_t index;
};

// Kernel taps [lo, hi) whose position start + tap * dilation lies in [0, size).
struct Taps {
  int64_t lo, hi;
};
Taps valid_taps(int64_t start, int64_t kernel, int64_t dilation, int64_t size) {
  const int64_t lo = start >= 0 ? 0 : ceil_div(-start, dilation);
  const int64_t hi = size - 1 - start < 0 ? 0 : std::min(kernel, (size - 1 - start) / dilation + 1);
  return {lo, std::max(lo, hi)};
}

// The max of one window of one plane (plane points at (n, c)); index -1 when the window
// holds no input element.
template <typename T>
Window<T> window_max(const T* plane, const PoolGeom& g, const Pool2dParams& p, int64_t oh,
                     int64_t ow) {
  const int64_t h0 = oh * p.stride[0] - p.padding[0], w0 = ow * p.stride[1] - p.padding[1];
  const int64_t h_span = (p.kernel[0] - 1) * p.dilation[0],
                w_span = (p.kernel[1] - 1) * p.dilation[1];
  // Most windows lie inside the plane: compare before dividing.
  const Taps rows = h0 >= 0 && h0 + h_span < g.H ? Taps{0, p.kernel[0]}
                                                 : valid_taps(h0, p.kernel[0], p.dilation[0], g.H);
  const Taps cols = w0 >= 0 && w0 + w_span < g.W ? Taps{0, p.kernel[1]}
                                                 : valid_taps(w0, p.kernel[1], p.dilation[1], g.W);
  if (rows.lo == rows.hi || cols.lo == cols.hi) return {-std::numeric_limits<T>::infinity(), -1};
  int64_t best_index = (h0 + rows.lo * p.dilation[0]) * g.W + w0 + cols.lo * p.dilation[1];
  T best =
      plane[(h0 + rows.lo * p.dilation[0]) * g.xs[2] + (w0 + cols.lo * p.dilation[1]) * g.xs[3]];
  for (int64_t r = rows.lo; r < rows.hi; ++r) {
    const int64_t ih = h0 + r * p.dilation[0];
    const T* row = plane + ih * g.xs[2];
    for (int64_t s = cols.lo; s < cols.hi; ++s) {
      const int64_t iw = w0 + s * p.dilation[1];
      const T v = row[iw * g.xs[3]];
      const bool take = (v > best) | (v != v);  // NaN wins, as in torch
      best = take ? v : best;
      best_index = take ? ih * g.W + iw : best_index;
    }
  }
  return {best, best_index};
}

// Calls f(n, c, oh, ow) for every output, in an order that walks memory forward for the
// layout, split over threads so that each (n, c) plane belongs to one thread.
template <typename F>
void for_each_output(const PoolGeom& g, int threads, const F& f) {
  const int64_t work = g.N * g.C * g.Ho * g.Wo;
  if (!g.channels_last) {
    parallel_for(g.N * g.C, threads_for(work, 1 << 14, threads), [&](int, int64_t b, int64_t e) {
      for (int64_t nc = b; nc < e; ++nc)
        for (int64_t oh = 0; oh < g.Ho; ++oh)
          for (int64_t ow = 0; ow < g.Wo; ++ow) f(nc / g.C, nc % g.C, oh, ow);
    });
    return;
  }
  const int nt = threads_for(work, 1 << 14, threads);
  const int64_t chunks = std::min<int64_t>(g.C, ceil_div(nt, std::max<int64_t>(g.N, 1)));
  parallel_for(g.N * chunks, nt, [&](int, int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      const int64_t n = u / chunks, chunk = u % chunks;
      const int64_t c0 = chunk * g.C / chunks, c1 = (chunk + 1) * g.C / chunks;
      for (int64_t oh = 0; oh < g.Ho; ++oh)
        for (int64_t ow = 0; ow < g.Wo; ++ow)
          for (int64_t c = c0; c < c1; ++c) f(n, c, oh, ow);
    }
  });
}

template <typename T>
void forward(const PoolGeom& g, const Pool2dParams& p, const T* x, T* y, int64_t* idx,
             int threads) {
  for_each_output(g, threads, [&](int64_t n, int64_t c, int64_t oh, int64_t ow) {
    const Window<T> m = window_max(x + n * g.xs[0] + c * g.xs[1], g, p, oh, ow);
    const int64_t o = n * g.ys[0] + c * g.ys[1] + oh * g.ys[2] + ow * g.ys[3];
    y[o] = m.value;
    if (idx) idx[o] = m.index;
  });
}

template <typename T>
bool backward(const PoolGeom& g, const Pool2dParams& p, const T* dy, const T* x, const int64_t* idx,
              T* dx, int threads) {
  std::memset(dx, 0, sizeof(T) * g.N * g.C * g.H * g.W);
  std::atomic<bool> bad_index{false};
  const int64_t plane = g.H * g.W;
  for_each_output(g, threads, [&](int64_t n, int64_t c, int64_t oh, int64_t ow) {
    const int64_t o = n * g.ys[0] + c * g.ys[1] + oh * g.ys[2] + ow * g.ys[3];
    const int64_t i = idx ? idx[o] : window_max(x + n * g.xs[0] + c * g.xs[1], g, p, oh, ow).index;
    if (i == -1) return;  // a window with no input element
    if (i < 0 || i >= plane) {
      bad_index.store(true, std::memory_order_relaxed);
      return;
    }
    dx[n * g.xs[0] + c * g.xs[1] + i / g.W * g.xs[2] + i % g.W * g.xs[3]] += dy[o];
  });
  return !bad_index.load();
}

}  // namespace

void max_pool2d_forward(const TensorView& input, const TensorView& output,
                        const TensorView* indices, const Pool2dParams& p, int threads) {
  check_threads("max_pool2d", threads);
  const PoolGeom g = validate("max_pool2d", "input", input, "output", output, indices, p);
  int64_t* idx = indices ? indices->ptr<int64_t>() : nullptr;
  if (input.dtype == DType::Float64)
    forward(g, p, input.ptr<double>(), output.ptr<double>(), idx, threads);
  else
    forward(g, p, input.ptr<float>(), output.ptr<float>(), idx, threads);
}

void max_pool2d_backward(const TensorView& grad_output, const TensorView& input,
                         const TensorView* indices, const TensorView& grad_input,
                         const Pool2dParams& p, int threads) {
  const char* op = "max_pool2d_backward";
  check_threads(op, threads);
  const PoolGeom g = validate(op, "input", input, "grad_output", grad_output, indices, p);
  check_cpu_float(op, "grad_input", grad_input);
  check_same_dtype(op, "grad_input", grad_input, input);
  FASTCNN_CHECK(dense_strides_4d(op, "grad_input", grad_input) == g.xs, op,
                ": grad_input must have the shape and memory format of input");
  check_sizes(op, "grad_input", grad_input, {g.N, g.C, g.H, g.W});
  if (grad_input.numel() == 0) return;  // its pointer may be null: nothing to clear
  const int64_t* idx = indices ? indices->ptr<int64_t>() : nullptr;
  const bool ok = input.dtype == DType::Float64
                      ? backward(g, p, grad_output.ptr<double>(), input.ptr<double>(), idx,
                                 grad_input.ptr<double>(), threads)
                      : backward(g, p, grad_output.ptr<float>(), input.ptr<float>(), idx,
                                 grad_input.ptr<float>(), threads);
  FASTCNN_CHECK(ok, op, ": indices must lie in [0, H*W) = [0, ", g.H * g.W,
                ") or be -1 (a window without input), got an index outside that range");
}

}  // namespace cpu
}  // namespace fastcnn
