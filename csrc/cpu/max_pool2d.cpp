// Max pooling: checks, threads and the walk over output rows; the per-ISA row kernels
// (cpu/max_pool2d_kernels.h) do the windows. Ties keep the first maximum in window order and
// NaN wins, as in torch, so the backward can recompute the argmax from the input instead of
// storing indices. Indices are flat (h * W + w) per plane; -1 marks a window with no input.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <optional>

#include "cpu/checks.h"
#include "cpu/isa_select.h"
#include "cpu/max_pool2d_kernels.h"
#include "cpu/microkernel.h"
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

const MaxPoolKernelSet& max_pool2d_kernels() {
  static const MaxPoolKernelSet chosen = FASTCNN_FOR_CHOSEN_ISA(max_pool2d_kernels);
  return chosen;
}

namespace {

struct PoolGeom {
  int64_t N, C, H, W, Ho, Wo;
  std::array<int64_t, 4> xs, ys;
  bool channels_last;
  bool prefetch;  // RowWindows::prefetch
};

// Inputs from this size on are read with software prefetches (max_pool2d_simd.h,
// prefetch_rows_ahead). Two threads on an Ice Lake Xeon (48 MB L3), 3x3 stride-2 windows:
// 25.7 MB inputs 20 % faster with them, 6.4 and 12.8 MB alike, 1.6 MB and smaller (cached
// between calls) 4-7 % slower.
constexpr int64_t kPrefetchBytes = int64_t{8} << 20;

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
    FASTCNN_CHECK_TYPE(indices->dtype == DType::Int64 || indices->dtype == DType::UInt8, op,
                       ": indices must be int64 (plane positions) or uint8 (window offsets), got ",
                       dtype_name(indices->dtype));
    check_sizes(op, "indices", *indices, {g.N, g.C, g.Ho, g.Wo});
    FASTCNN_CHECK(dense_strides_4d(op, "indices", *indices) == g.ys, op,
                  ": indices must have the memory format of ", out_name);
  }
  // Channels innermost in both, or columns innermost in both (size-1 dims fit either).
  g.channels_last = g.C > 1 && g.xs[1] == 1 && g.ys[1] == 1;
  g.prefetch = g.N * g.C * g.H * g.W * dtype_size(x.dtype) >= kPrefetchBytes;
  FASTCNN_CHECK(g.channels_last || (g.xs[3] == 1 && g.ys[3] == 1), op, ": ", out_name,
                " must have the memory format of ", in_name);
  return g;
}

// The windows of output row oh, for the row kernels.
RowWindows row_windows(const PoolGeom& g, const Pool2dParams& p, int64_t oh) {
  const int64_t h0 = oh * p.stride[0] - p.padding[0];
  const int64_t lo = h0 >= 0 ? 0 : ceil_div(-h0, p.dilation[0]);
  const int64_t hi =
      g.H - 1 - h0 < 0 ? 0 : std::min(p.kernel[0], (g.H - 1 - h0) / p.dilation[0] + 1);
  return {h0 + lo * p.dilation[0],
          std::max<int64_t>(0, hi - lo),
          p.dilation[0],
          p.kernel[1],
          p.stride[1],
          p.padding[1],
          p.dilation[1],
          g.W,
          g.prefetch};
}

template <typename T>
const MaxPoolKernels<T>& kernels() {
  return for_dtype<T>(max_pool2d_kernels());
}

// NHWC work splits over images and, when there are fewer images than threads, channel
// ranges: f(n, c0, c1) owns every input and output element of those channels of image n.
template <typename F>
void for_each_channel_range(const PoolGeom& g, int threads, const F& f) {
  const int nt = threads_for(g.N * g.C * g.Ho * g.Wo, 1 << 14, threads);
  const int64_t chunks = std::min<int64_t>(g.C, ceil_div(nt, std::max<int64_t>(g.N, 1)));
  parallel_for(g.N * chunks, nt, [&](int, int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) {
      const int64_t n = u / chunks, chunk = u % chunks;
      f(n, chunk * g.C / chunks, (chunk + 1) * g.C / chunks);
    }
  });
}

// NCHW work splits over (n, c) planes: f(n, c).
template <typename F>
void for_each_plane(const PoolGeom& g, int threads, const F& f) {
  const int nt = threads_for(g.N * g.C * g.Ho * g.Wo, 1 << 14, threads);
  parallel_for(g.N * g.C, nt, [&](int, int64_t b, int64_t e) {
    for (int64_t nc = b; nc < e; ++nc) f(nc / g.C, nc % g.C);
  });
}

// Whether the windows are 2x2 with stride 2, no padding or dilation, and lie inside the
// input (a ceil_mode window hanging over an odd edge does not).
bool windows_2x2(const PoolGeom& g, const Pool2dParams& p) {
  for (int i = 0; i < 2; ++i)
    if (p.kernel[i] != 2 || p.stride[i] != 2 || p.padding[i] != 0 || p.dilation[i] != 1)
      return false;
  return 2 * g.Ho <= g.H && 2 * g.Wo <= g.W;
}

// The Plane3x3s2 of the geometry when its windows are 3x3 with stride 2 and no dilation and
// its rows fit the kernel's buffers.
std::optional<Plane3x3s2> plane_3x3s2(const PoolGeom& g, const Pool2dParams& p) {
  for (int i = 0; i < 2; ++i)
    if (p.kernel[i] != 3 || p.stride[i] != 2 || p.dilation[i] != 1) return std::nullopt;
  if (g.Wo > kMaxRow3x3) return std::nullopt;
  return Plane3x3s2{g.H, g.W, g.Ho, g.Wo, p.padding[0], p.padding[1], g.prefetch};
}

// Whether the forward can keep window offsets for the backward: planes with contiguous rows
// (NCHW, or channels_last with one channel) and 2x2 stride-2 windows that tile them or
// Plane3x3s2 windows. Their backward then reads one byte per output instead of the whole
// input (P1: 1.6 MB against 25.7).
bool keeps_offsets(const PoolGeom& g, const Pool2dParams& p) {
  return g.xs[3] == 1 && g.ys[3] == 1 && (windows_2x2(g, p) || plane_3x3s2(g, p));
}

// The window offsets of a forward or backward call, checked against the geometry: null
// without them (no indices, or int64 indices).
const TensorView* offsets_of(const char* op, const TensorView* indices, const PoolGeom& g,
                             const Pool2dParams& p) {
  if (!indices || indices->dtype != DType::UInt8) return nullptr;
  FASTCNN_CHECK(keeps_offsets(g, p), op,
                ": window offsets (uint8 indices) are kept only for NCHW inputs with 2x2 stride-2 "
                "windows that tile the input or 3x3 stride-2 windows with at most ",
                kMaxRow3x3, " outputs a row");
  return indices;
}

template <typename T>
void forward(const PoolGeom& g, const Pool2dParams& p, const T* x, T* y, int64_t* idx,
             uint8_t* offsets, int threads) {
  const MaxPoolKernels<T>& k = kernels<T>();
  if (offsets) {  // keeps_offsets holds
    const std::optional<Plane3x3s2> plane = plane_3x3s2(g, p);
    for_each_plane(g, threads, [&](int64_t n, int64_t c) {
      const T* xp = x + n * g.xs[0] + c * g.xs[1];
      for (int64_t oh = 0; oh < g.Ho; ++oh) {
        const int64_t o = n * g.ys[0] + c * g.ys[1] + oh * g.ys[2];
        if (plane)
          k.nchw_row_3x3s2(xp, *plane, oh, y + o, offsets + o);
        else
          k.nchw_row_2x2(xp + 2 * oh * g.W, g.W, g.Wo, y + o, offsets + o);
      }
    });
    return;
  }
  if (g.channels_last) {
    for_each_channel_range(g, threads, [&](int64_t n, int64_t c0, int64_t c1) {
      for (int64_t oh = 0; oh < g.Ho; ++oh) {
        const int64_t o = n * g.ys[0] + oh * g.ys[2];
        k.nhwc_row(x + n * g.xs[0], row_windows(g, p, oh), g.C, c0, c1, g.Wo, g.ys[3], y + o,
                   idx ? idx + o : nullptr);
      }
    });
    return;
  }
  if (idx == nullptr && windows_2x2(g, p)) {
    for_each_plane(g, threads, [&](int64_t n, int64_t c) {
      const T* xp = x + n * g.xs[0] + c * g.xs[1];
      T* yp = y + n * g.ys[0] + c * g.ys[1];
      for (int64_t oh = 0; oh < g.Ho; ++oh)
        k.nchw_row_2x2(xp + 2 * oh * g.W, g.W, g.Wo, yp + oh * g.ys[2], nullptr);
    });
    return;
  }
  for_each_plane(g, threads, [&](int64_t n, int64_t c) {
    for (int64_t oh = 0; oh < g.Ho; ++oh) {
      const int64_t o = n * g.ys[0] + c * g.ys[1] + oh * g.ys[2];
      k.nchw_row(x + n * g.xs[0] + c * g.xs[1], row_windows(g, p, oh), 0, g.Wo, y + o,
                 idx ? idx + o : nullptr);
    }
  });
}

// Zeroes rows [h0, h1), channels [c0, c1) of image n of dx (NHWC).
template <typename T>
void zero_rows(const PoolGeom& g, T* dx, int64_t n, int64_t h0, int64_t h1, int64_t c0,
               int64_t c1) {
  T* image = dx + n * g.xs[0];
  if (c0 == 0 && c1 == g.C) {
    std::memset(image + h0 * g.W * g.C, 0, sizeof(T) * g.C * g.W * (h1 - h0));
    return;
  }
  for (int64_t i = h0 * g.W; i < h1 * g.W; ++i)
    std::memset(image + i * g.C + c0, 0, sizeof(T) * (c1 - c0));
}

// Whether the windows cover every input element exactly once.
bool windows_tile(const PoolGeom& g, const Pool2dParams& p) {
  return p.kernel[0] == p.stride[0] && p.kernel[1] == p.stride[1] && p.padding[0] == 0 &&
         p.padding[1] == 0 && p.dilation[0] == 1 && p.dilation[1] == 1 &&
         g.Ho * p.stride[0] == g.H && g.Wo * p.stride[1] == g.W;
}

// With indices from the forward: dx[index] += dy, every index checked. The element of flat
// index i of a plane lies i * xs[3] past the plane's start in both layouts.
template <typename T>
bool backward_indexed(const PoolGeom& g, const T* dy, const int64_t* idx, T* dx, int threads) {
  std::atomic<bool> bad_index{false};
  const int64_t plane = g.H * g.W;
  auto scatter = [&](int64_t n, int64_t c, int64_t oh, int64_t ow) {
    const int64_t o = n * g.ys[0] + c * g.ys[1] + oh * g.ys[2] + ow * g.ys[3];
    const int64_t i = idx[o];
    if (i == -1) return;  // a window with no input element
    if (i < 0 || i >= plane) {
      bad_index.store(true, std::memory_order_relaxed);
      return;
    }
    dx[n * g.xs[0] + c * g.xs[1] + i * g.xs[3]] += dy[o];
  };
  if (g.channels_last) {
    for_each_channel_range(g, threads, [&](int64_t n, int64_t c0, int64_t c1) {
      zero_rows(g, dx, n, 0, g.H, c0, c1);
      for (int64_t oh = 0; oh < g.Ho; ++oh)
        for (int64_t ow = 0; ow < g.Wo; ++ow)
          for (int64_t c = c0; c < c1; ++c) scatter(n, c, oh, ow);
    });
  } else {
    for_each_plane(g, threads, [&](int64_t n, int64_t c) {
      std::memset(dx + n * g.xs[0] + c * g.xs[1], 0, sizeof(T) * plane);
      for (int64_t oh = 0; oh < g.Ho; ++oh)
        for (int64_t ow = 0; ow < g.Wo; ++ow) scatter(n, c, oh, ow);
    });
  }
  return !bad_index.load();
}

// Without indices: the argmax is recomputed from x, with the forward's kernels and rules, or
// read from the window offsets the forward kept (keeps_offsets holds); false if one of those
// is no tap inside the input.
template <typename T>
bool backward_windows(const PoolGeom& g, const Pool2dParams& p, const T* dy, const T* x,
                      const uint8_t* offsets, T* dx, int threads) {
  const MaxPoolKernels<T>& k = kernels<T>();
  std::atomic<bool> valid{true};
  if (g.channels_last && !offsets) {
    const bool tiles = windows_tile(g, p);
    for_each_channel_range(g, threads, [&](int64_t n, int64_t c0, int64_t c1) {
      // Rows are zeroed just before the first window that adds to them, so the adds find
      // them in cache.
      int64_t zeroed = tiles ? g.H : 0;
      for (int64_t oh = 0; oh < g.Ho; ++oh) {
        const RowWindows rows = row_windows(g, p, oh);
        const int64_t needed = rows.rows ? rows.first_row + (rows.rows - 1) * rows.row_step + 1 : 0;
        if (needed > zeroed) {
          zero_rows(g, dx, n, zeroed, needed, c0, c1);
          zeroed = needed;
        }
        k.nhwc_row_backward(x + n * g.xs[0], rows, g.C, c0, c1, g.Wo, g.ys[3],
                            dy + n * g.ys[0] + oh * g.ys[2], dx + n * g.xs[0], tiles);
      }
      zero_rows(g, dx, n, zeroed, g.H, c0, c1);
    });
    return true;
  }
  // The plane (n, c) of x and of the offsets, when given.
  auto plane_of = [&](int64_t n, int64_t c) { return x + n * g.xs[0] + c * g.xs[1]; };
  auto plane_offsets = [&](int64_t n, int64_t c) {
    return offsets ? offsets + n * g.ys[0] + c * g.ys[1] : nullptr;
  };
  if (windows_2x2(g, p)) {
    for_each_plane(g, threads, [&](int64_t n, int64_t c) {
      T* dxp = dx + n * g.xs[0] + c * g.xs[1];
      const T* xp = plane_of(n, c);
      const uint8_t* off = plane_offsets(n, c);
      const T* dyp = dy + n * g.ys[0] + c * g.ys[1];
      bool plane_valid = true;
      for (int64_t oh = 0; oh < g.Ho; ++oh)
        plane_valid &=
            k.nchw_row_backward_2x2(xp + 2 * oh * g.W, off ? off + oh * g.ys[2] : nullptr, g.W,
                                    g.Wo, dyp + oh * g.ys[2], dxp + 2 * oh * g.W);
      // An odd last row lies in no window.
      std::memset(dxp + 2 * g.Ho * g.W, 0, sizeof(T) * (g.H - 2 * g.Ho) * g.W);
      if (!plane_valid) valid.store(false, std::memory_order_relaxed);
    });
    return valid.load();
  }
  if (const std::optional<Plane3x3s2> plane = plane_3x3s2(g, p)) {
    for_each_plane(g, threads, [&](int64_t n, int64_t c) {
      if (!k.nchw_plane_backward_3x3s2(plane_of(n, c), plane_offsets(n, c), *plane,
                                       dy + n * g.ys[0] + c * g.ys[1], g.ys[2],
                                       dx + n * g.xs[0] + c * g.xs[1]))
        valid.store(false, std::memory_order_relaxed);
    });
    return valid.load();
  }
  for_each_plane(g, threads, [&](int64_t n, int64_t c) {
    T* dxp = dx + n * g.xs[0] + c * g.xs[1];
    const T* xp = x + n * g.xs[0] + c * g.xs[1];
    std::memset(dxp, 0, sizeof(T) * g.H * g.W);
    for (int64_t oh = 0; oh < g.Ho; ++oh)
      k.nchw_row_backward(xp, row_windows(g, p, oh), g.Wo,
                          dy + n * g.ys[0] + c * g.ys[1] + oh * g.ys[2], dxp);
  });
  return true;
}

}  // namespace

void max_pool2d_forward(const TensorView& input, const TensorView& output,
                        const TensorView* indices, const Pool2dParams& p, int threads) {
  const char* op = "max_pool2d";
  check_threads(op, threads);
  const PoolGeom g = validate(op, "input", input, "output", output, indices, p);
  const TensorView* offsets = offsets_of(op, indices, g, p);
  int64_t* idx = indices && !offsets ? indices->ptr<int64_t>() : nullptr;
  uint8_t* off = offsets ? offsets->ptr<uint8_t>() : nullptr;
  if (input.dtype == DType::Float64)
    forward(g, p, input.ptr<double>(), output.ptr<double>(), idx, off, threads);
  else
    forward(g, p, input.ptr<float>(), output.ptr<float>(), idx, off, threads);
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
  const TensorView* offsets = offsets_of(op, indices, g, p);
  if (grad_input.numel() == 0) return;  // its pointer may be null: nothing to clear
  if (indices == nullptr || offsets) {
    const uint8_t* off = offsets ? offsets->ptr<uint8_t>() : nullptr;
    const bool ok = input.dtype == DType::Float64
                        ? backward_windows(g, p, grad_output.ptr<double>(), input.ptr<double>(),
                                           off, grad_input.ptr<double>(), threads)
                        : backward_windows(g, p, grad_output.ptr<float>(), input.ptr<float>(), off,
                                           grad_input.ptr<float>(), threads);
    FASTCNN_CHECK(ok, op,
                  ": window offsets must name a tap of their window that lies inside the input, "
                  "got one that does not");
    return;
  }
  const int64_t* idx = indices->ptr<int64_t>();
  const bool ok =
      input.dtype == DType::Float64
          ? backward_indexed(g, grad_output.ptr<double>(), idx, grad_input.ptr<double>(), threads)
          : backward_indexed(g, grad_output.ptr<float>(), idx, grad_input.ptr<float>(), threads);
  FASTCNN_CHECK(ok, op, ": indices must lie in [0, H*W) = [0, ", g.H * g.W,
                ") or be -1 (a window without input), got an index outside that range");
}

}  // namespace cpu
}  // namespace fastcnn
