// Loop orders follow the image's layout: NCHW walks planes, with rows as the vectorized
// inner loop; NHWC walks pixels, with channels as the inner loop (weights transposed to
// [R*S][K] in the workspace so that loop reads them contiguously). The common shapes run the
// per-ISA vector kernels; the loops here cover the rest.
#include "cpu/conv2d_depthwise.h"

#include <algorithm>

#include "cpu/conv2d_packing.h"
#include "cpu/isa_select.h"
#include "cpu/parallel.h"

namespace fastcnn::cpu {
namespace {

// Padding is explicit zeros, as on the vector paths: a tap over it adds w * 0 (and, to the
// weight gradient, dy * 0), which is NaN when that factor is Inf or NaN. f(i) runs for the
// outputs [0, n) outside `inside`.
template <typename F>
void for_each_padded(ValidColumns inside, int64_t n, const F& f) {
  for (int64_t i = 0; i < inside.lo; ++i) f(i);
  for (int64_t i = inside.hi; i < n; ++i) f(i);
}

// y[i * incy] += a * x[i * incx]; the unit-stride case is the one that vectorizes.
template <typename T>
void axpy(int64_t n, T a, const T* x, int64_t incx, T* y, int64_t incy) {
  if (incx == 1 && incy == 1) {
    for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
  } else {
    for (int64_t i = 0; i < n; ++i) y[i * incy] += a * x[i * incx];
  }
}

template <typename T>
T dot(int64_t n, const T* x, int64_t incx, const T* y, int64_t incy) {
  T sum = T(0);
  if (incx == 1 && incy == 1) {
    for (int64_t i = 0; i < n; ++i) sum += x[i] * y[i];
  } else {
    for (int64_t i = 0; i < n; ++i) sum += x[i * incx] * y[i * incy];
  }
  return sum;
}

// out[k] (+)= w[k] * in[k / multiplier] over all filters k, channels strided.
template <typename T>
void channel_fma(const ConvGeom& g, const T* w, const T* in, T* out, int64_t k0, int64_t k1) {
  if (g.Kg == 1 && g.xs[1] == 1 && g.ys[1] == 1) {
    for (int64_t k = k0; k < k1; ++k) out[k] += w[k] * in[k];
  } else {
    for (int64_t k = k0; k < k1; ++k) out[k * g.ys[1]] += w[k] * in[k / g.Kg * g.xs[1]];
  }
}

bool image_channels_last(const std::array<int64_t, 4>& s) {
  return s[1] == 1 && s[3] != 1;
}

template <typename T>
T tap(const ConvGeom& g, const T* w, int64_t k, int64_t r, int64_t s) {
  return w[k * g.ws[0] + r * g.ws[2] + s * g.ws[3]];
}

template <typename T>
void transpose_weights(const ConvGeom& g, const T* w, T* wt) {
  for (int64_t k = 0; k < g.K; ++k)
    for (int64_t rs = 0; rs < g.RS(); ++rs) wt[rs * g.K + k] = tap(g, w, k, rs / g.S, rs % g.S);
}

int threads_for_conv(const ConvGeom& g, int threads) {
  return threads_for(g.N * g.K * g.P() * g.RS(), 1 << 16, threads);
}

const DepthwiseKernelSet& kernel_set() {
  static const DepthwiseKernelSet chosen = FASTCNN_FOR_CHOSEN_ISA(depthwise_kernels);
  return chosen;
}

template <typename T>
const DepthwiseKernels<T>& kernels() {
  return for_dtype<T>(kernel_set());
}

// Lanes of the widest vector any ISA's kernels use: the conditions below hold for every ISA.
template <typename T>
constexpr int64_t widest_lanes() {
  return kDepthwiseVecBytes / sizeof(T);
}

// The NCHW kernels: output rows unit-stride, the staged rows fit their stack buffer.
template <typename T>
bool nchw_vectorized(const ConvGeom& g) {
  return g.ys[3] == 1 && g.RS() <= kDepthwiseMaxTaps &&
         depthwise_ring_rows(g) * g.sw * depthwise_phase_len(g, widest_lanes<T>()) *
                 int64_t(sizeof(T)) <=
             kDepthwiseRingBytes;
}

// The NHWC kernels: channels unit-stride, multiplier 1, at least one vector of channels.
template <typename T>
bool nhwc_vectorized(const ConvGeom& g) {
  return g.xs[1] == 1 && g.ys[1] == 1 && g.Kg == 1 && g.K >= widest_lanes<T>() &&
         g.RS() <= kDepthwiseMaxTaps;
}

}  // namespace

template <typename T>
void depthwise_forward(const ConvGeom& g, const T* x, const T* w, const T* bias, T* y, bool relu,
                       T* ws, int threads) {
  const int nt = threads_for_conv(g, threads);
  // A select, not a conditional store: a branch on the sign mispredicts half the time.
  auto epilogue = [&](T* o, int64_t n, int64_t stride) {
    if (!relu) return;
    for (int64_t i = 0; i < n; ++i) o[i * stride] = o[i * stride] < T(0) ? T(0) : o[i * stride];
  };
  if (!image_channels_last(g.xs) && nchw_vectorized<T>(g)) {
    parallel_for(g.N * g.C, nt, [&](int, int64_t begin, int64_t end) {
      for (int64_t nc = begin; nc < end; ++nc) {
        const int64_t n = nc / g.C, c = nc % g.C;
        kernels<T>().nchw_forward_plane(g, x + n * g.xs[0] + c * g.xs[1], w, bias, y + n * g.ys[0],
                                        c, relu);
      }
    });
    return;
  }
  if (!image_channels_last(g.xs)) {
    parallel_for(g.N * g.K, nt, [&](int, int64_t begin, int64_t end) {
      for (int64_t nk = begin; nk < end; ++nk) {
        const int64_t n = nk / g.K, k = nk % g.K;
        const T* in = x + n * g.xs[0] + k / g.Kg * g.xs[1];
        for (int64_t oh = 0; oh < g.Ho; ++oh) {
          T* o = y + n * g.ys[0] + k * g.ys[1] + oh * g.ys[2];
          for (int64_t ow = 0; ow < g.Wo; ++ow) o[ow * g.ys[3]] = bias ? bias[k] : T(0);
          for (int64_t r = 0; r < g.R; ++r) {
            const int64_t ih = oh * g.sh - g.ph + r * g.dh;
            const bool row_in = in_range(ih, g.H);
            for (int64_t s = 0; s < g.S; ++s) {
              const T wv = tap(g, w, k, r, s);
              const int64_t off = s * g.dw - g.pw;
              const ValidColumns span =
                  row_in ? valid_columns(g, s * g.dw, g.Wo) : ValidColumns{0, 0};
              if (row_in)
                axpy(span.hi - span.lo, wv, in + ih * g.xs[2] + (span.lo * g.sw + off) * g.xs[3],
                     g.sw * g.xs[3], o + span.lo * g.ys[3], g.ys[3]);
              for_each_padded(span, g.Wo, [&](int64_t ow) { o[ow * g.ys[3]] += wv * T(0); });
            }
          }
          epilogue(o, g.Wo, g.ys[3]);
        }
      }
    });
    return;
  }
  transpose_weights(g, w, ws);
  if (nhwc_vectorized<T>(g)) {
    parallel_for(g.N * g.Ho, nt, [&](int, int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / g.Ho, oh = row % g.Ho;
        kernels<T>().nhwc_forward_row(g, x + n * g.xs[0], ws, bias, y + n * g.ys[0] + oh * g.ys[2],
                                      oh, relu);
      }
    });
    return;
  }
  parallel_for(g.N * g.Ho, nt, [&](int, int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / g.Ho, oh = row % g.Ho;
      for (int64_t ow = 0; ow < g.Wo; ++ow) {
        T* o = y + n * g.ys[0] + oh * g.ys[2] + ow * g.ys[3];
        for (int64_t k = 0; k < g.K; ++k) o[k * g.ys[1]] = bias ? bias[k] : T(0);
        for (int64_t rs = 0; rs < g.RS(); ++rs) {
          const int64_t ih = oh * g.sh - g.ph + rs / g.S * g.dh;
          const int64_t iw = ow * g.sw - g.pw + rs % g.S * g.dw;
          if (!in_range(ih, g.H) || !in_range(iw, g.W)) {
            for (int64_t k = 0; k < g.K; ++k) o[k * g.ys[1]] += ws[rs * g.K + k] * T(0);
            continue;
          }
          const T* xi = x + n * g.xs[0] + ih * g.xs[2] + iw * g.xs[3];
          channel_fma(g, ws + rs * g.K, xi, o, 0, g.K);
        }
        epilogue(o, g.K, g.ys[1]);
      }
    }
  });
}

template <typename T>
void depthwise_backward_input(const ConvGeom& g, const T* dy, const T* w, T* dx, T* ws,
                              int threads) {
  const int nt = threads_for_conv(g, threads);
  if (!image_channels_last(g.xs)) {
    parallel_for(g.N * g.C, nt, [&](int, int64_t begin, int64_t end) {
      for (int64_t nc = begin; nc < end; ++nc) {
        const int64_t n = nc / g.C, c = nc % g.C;
        T* plane = dx + n * g.xs[0] + c * g.xs[1];
        for (int64_t i = 0; i < g.H * g.W; ++i) plane[i * g.xs[3]] = T(0);
        for (int64_t k = c * g.Kg; k < (c + 1) * g.Kg; ++k) {
          for (int64_t oh = 0; oh < g.Ho; ++oh) {
            const T* d = dy + n * g.ys[0] + k * g.ys[1] + oh * g.ys[2];
            for (int64_t r = 0; r < g.R; ++r) {
              const int64_t ih = oh * g.sh - g.ph + r * g.dh;
              if (!in_range(ih, g.H)) continue;
              T* row = plane + ih * g.xs[2];
              for (int64_t s = 0; s < g.S; ++s) {
                const T wv = tap(g, w, k, r, s);
                const int64_t off = s * g.dw - g.pw;
                const ValidColumns span = valid_columns(g, s * g.dw, g.Wo);
                axpy(span.hi - span.lo, wv, d + span.lo * g.ys[3], g.ys[3],
                     row + (span.lo * g.sw + off) * g.xs[3], g.sw * g.xs[3]);
              }
            }
          }
        }
      }
    });
    return;
  }
  transpose_weights(g, w, ws);
  // Overlapping windows add into the same pixels: a task owns (image, channel range).
  const int64_t chunks = std::min<int64_t>(g.C, ceil_div(nt, std::max<int64_t>(g.N, 1)));
  parallel_for(g.N * chunks, nt, [&](int, int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int64_t n = u / chunks, c0 = u % chunks * g.C / chunks,
                    c1 = (u % chunks + 1) * g.C / chunks;
      T* image = dx + n * g.xs[0];
      for (int64_t i = 0; i < g.H * g.W; ++i)
        for (int64_t c = c0; c < c1; ++c) image[i * g.xs[3] + c * g.xs[1]] = T(0);
      for (int64_t oh = 0; oh < g.Ho; ++oh)
        for (int64_t ow = 0; ow < g.Wo; ++ow) {
          const T* d = dy + n * g.ys[0] + oh * g.ys[2] + ow * g.ys[3];
          for (int64_t rs = 0; rs < g.RS(); ++rs) {
            const int64_t ih = oh * g.sh - g.ph + rs / g.S * g.dh;
            const int64_t iw = ow * g.sw - g.pw + rs % g.S * g.dw;
            if (!in_range(ih, g.H) || !in_range(iw, g.W)) continue;
            T* xi = image + ih * g.xs[2] + iw * g.xs[3];
            const T* wr = ws + rs * g.K;
            for (int64_t c = c0; c < c1; ++c) {
              T sum = T(0);
              for (int64_t k = c * g.Kg; k < (c + 1) * g.Kg; ++k) sum += wr[k] * d[k * g.ys[1]];
              xi[c * g.xs[1]] += sum;
            }
          }
        }
    }
  });
}

template <typename T>
void depthwise_backward_weight(const ConvGeom& g, const T* dy, const T* x, T* dw, T* ws,
                               int threads) {
  const int nt = threads_for_conv(g, threads);
  auto store = [&](int64_t k, int64_t rs, T v) { dw[k * g.ws[0] + filter_tap(g, 0, rs)] = v; };
  if (!image_channels_last(g.xs) && nchw_vectorized<T>(g)) {
    parallel_for(g.K, nt, [&](int, int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        T taps[kDepthwiseMaxTaps];
        kernels<T>().nchw_weight_filter(g, dy, x, k, taps);
        for (int64_t rs = 0; rs < g.RS(); ++rs) store(k, rs, taps[rs]);
      }
    });
    return;
  }
  if (image_channels_last(g.xs) && nhwc_vectorized<T>(g)) {
    // A task owns a range of channel blocks; the last block overlaps the one before and
    // stores only its new channels.
    const int64_t L = kernels<T>().lanes;
    parallel_for(ceil_div(g.K, L), nt, [&](int, int64_t begin, int64_t end) {
      kernels<T>().nhwc_weight_blocks(g, dy, x, begin, end, ws);
      for (int64_t b = begin; b < end; ++b) {
        const int64_t c = std::min(b * L, g.K - L);
        for (int64_t k = b * L; k < std::min(g.K, b * L + L); ++k)
          for (int64_t rs = 0; rs < g.RS(); ++rs) store(k, rs, ws[(b * g.RS() + rs) * L + k - c]);
      }
    });
    return;
  }
  if (!image_channels_last(g.xs)) {
    parallel_for(g.K, nt, [&](int, int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        for (int64_t r = 0; r < g.R; ++r)
          for (int64_t s = 0; s < g.S; ++s) {
            const int64_t off = s * g.dw - g.pw;
            const ValidColumns span = valid_columns(g, s * g.dw, g.Wo);
            T acc = T(0);
            for (int64_t n = 0; n < g.N; ++n) {
              const T* in = x + n * g.xs[0] + k / g.Kg * g.xs[1];
              for (int64_t oh = 0; oh < g.Ho; ++oh) {
                const int64_t ih = oh * g.sh - g.ph + r * g.dh;
                const T* d = dy + n * g.ys[0] + k * g.ys[1] + oh * g.ys[2];
                const bool row_in = in_range(ih, g.H);
                const ValidColumns inside = row_in ? span : ValidColumns{0, 0};
                if (row_in)
                  acc +=
                      dot(inside.hi - inside.lo, d + inside.lo * g.ys[3], g.ys[3],
                          in + ih * g.xs[2] + (inside.lo * g.sw + off) * g.xs[3], g.sw * g.xs[3]);
                for_each_padded(inside, g.Wo, [&](int64_t ow) { acc += d[ow * g.ys[3]] * T(0); });
              }
            }
            store(k, r * g.S + s, acc);
          }
      }
    });
    return;
  }
  // Accumulators [R*S][K] in the workspace; a task owns a range of filters.
  const int64_t chunks = std::min<int64_t>(g.K, nt);
  parallel_for(chunks, nt, [&](int, int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int64_t k0 = u * g.K / chunks, k1 = (u + 1) * g.K / chunks;
      for (int64_t rs = 0; rs < g.RS(); ++rs)
        std::fill(ws + rs * g.K + k0, ws + rs * g.K + k1, T(0));
      for (int64_t n = 0; n < g.N; ++n)
        for (int64_t oh = 0; oh < g.Ho; ++oh)
          for (int64_t ow = 0; ow < g.Wo; ++ow) {
            const T* d = dy + n * g.ys[0] + oh * g.ys[2] + ow * g.ys[3];
            for (int64_t rs = 0; rs < g.RS(); ++rs) {
              const int64_t ih = oh * g.sh - g.ph + rs / g.S * g.dh;
              const int64_t iw = ow * g.sw - g.pw + rs % g.S * g.dw;
              T* acc = ws + rs * g.K;
              if (!in_range(ih, g.H) || !in_range(iw, g.W)) {
                for (int64_t k = k0; k < k1; ++k) acc[k] += d[k * g.ys[1]] * T(0);
                continue;
              }
              const T* xi = x + n * g.xs[0] + ih * g.xs[2] + iw * g.xs[3];
              if (g.Kg == 1 && g.xs[1] == 1 && g.ys[1] == 1) {
                for (int64_t k = k0; k < k1; ++k) acc[k] += d[k] * xi[k];
              } else {
                for (int64_t k = k0; k < k1; ++k) acc[k] += d[k * g.ys[1]] * xi[k / g.Kg * g.xs[1]];
              }
            }
          }
      for (int64_t k = k0; k < k1; ++k)
        for (int64_t rs = 0; rs < g.RS(); ++rs) store(k, rs, ws[rs * g.K + k]);
    }
  });
}

#define FASTCNN_INSTANTIATE(T)                                                                    \
  template void depthwise_forward<T>(const ConvGeom&, const T*, const T*, const T*, T*, bool, T*, \
                                     int);                                                        \
  template void depthwise_backward_input<T>(const ConvGeom&, const T*, const T*, T*, T*, int);    \
  template void depthwise_backward_weight<T>(const ConvGeom&, const T*, const T*, T*, T*, int);
FASTCNN_INSTANTIATE(float)
FASTCNN_INSTANTIATE(double)
#undef FASTCNN_INSTANTIATE

}  // namespace fastcnn::cpu
