// The rows path's driver: filters packed once as [segment][t][filter] in panels of kRowsNR
// filters; tasks are (image, output row), each copying the input rows its windows read into
// a zero-padded buffer (rows the padding covers are zeros, so padding multiplies like any
// other value, as in the GEMM path) and running every (filter panel, position tile) over it.
#include "cpu/conv2d_rows.h"

#include <algorithm>
#include <cstring>

#include "cpu/isa_select.h"
#include "cpu/parallel.h"

namespace fastcnn::cpu {

const RowsKernel& rows_kernel() {
  static const RowsKernel chosen = FASTCNN_FOR_CHOSEN_ISA(rows_kernel);
  return chosen;
}

namespace {

// How the input is cut into segments, and the buffer sizes; computed the same for sizing
// and running.
struct RowsLayout {
  bool nhwc;
  int64_t segs, len, step;  // segments per tile, run length, position step within a row
  int64_t row_elems;        // one padded row: reaches every tile's last position
  int64_t panels;           // filter panels of kRowsNR
  int64_t w_elems, buf_elems;
};

RowsLayout rows_layout(const ConvGeom& g) {
  RowsLayout l;
  l.nhwc = g.xs[1] == 1;
  const int64_t cpix = l.nhwc ? g.C : 1;  // floats per pixel in one padded row
  l.segs = l.nhwc ? g.R : g.C * g.R;
  l.len = g.S * cpix;
  l.step = g.sw * cpix;
  const int64_t last = round_up(g.Wo, kRowsMR) - 1;
  l.row_elems = round_up((last * g.sw + g.S) * cpix, 16);
  l.panels = ceil_div(g.K, kRowsNR);
  l.w_elems = round_up(l.panels * g.C * g.RS() * kRowsNR, 16);
  l.buf_elems = l.segs * l.row_elems;
  return l;
}

// The filters as panels [panel][segment][t][kRowsNR], zero past the last filter.
void pack_filters(const ConvGeom& g, const RowsLayout& l, const float* w, float* wp) {
  for (int64_t p = 0; p < l.panels; ++p)
    for (int64_t seg = 0; seg < l.segs; ++seg)
      for (int64_t t = 0; t < l.len; ++t) {
        // NHWC: segment r, t = (s, c); NCHW: segment (c, r), t = s.
        const int64_t c = l.nhwc ? t % g.C : seg / g.R;
        const int64_t r = l.nhwc ? seg : seg % g.R;
        const int64_t s = l.nhwc ? t / g.C : t;
        float* dst = wp + ((p * l.segs + seg) * l.len + t) * kRowsNR;
        for (int64_t j = 0; j < kRowsNR; ++j) {
          const int64_t k = p * kRowsNR + j;
          dst[j] = k < g.K ? w[k * g.ws[0] + c * g.ws[1] + r * g.ws[2] + s * g.ws[3]] : 0.f;
        }
      }
}

// Segment seg's input row for output row ho of image n, zero-padded: element
// (pw + iw) * cpix + c holds x[n, c, ih, iw].
void fill_row(const ConvGeom& g, const RowsLayout& l, const float* x, int64_t n, int64_t ho,
              int64_t seg, float* row) {
  const int64_t r = l.nhwc ? seg : seg % g.R;
  const int64_t ih = ho * g.sh - g.ph + r;
  const int64_t cpix = l.nhwc ? g.C : 1;
  // Pixels the tiles reach, from the left padding on.
  const int64_t width =
      in_range(ih, g.H) ? std::clamp<int64_t>(l.row_elems / cpix - g.pw, 0, g.W) : 0;
  const int64_t begin = std::min(g.pw * cpix, l.row_elems), end = begin + width * cpix;
  std::memset(row, 0, begin * sizeof(float));
  std::memset(row + end, 0, (l.row_elems - end) * sizeof(float));
  if (width == 0) return;
  const float* src = x + n * g.xs[0] + ih * g.xs[2] + (l.nhwc ? 0 : seg / g.R * g.xs[1]);
  float* dst = row + begin;
  if (g.xs[3] == cpix) {  // the row's pixels are adjacent (dense NHWC, or NCHW rows)
    std::memcpy(dst, src, width * cpix * sizeof(float));
  } else {
    for (int64_t iw = 0; iw < width; ++iw)
      for (int64_t c = 0; c < cpix; ++c) dst[iw * cpix + c] = src[iw * g.xs[3] + c * g.xs[1]];
  }
}

// Threads the tasks (image, output row) can keep busy: each takes a buffer of the workspace.
int rows_threads(const ConvGeom& g, int threads) {
  return threads_for(g.N * g.Ho, 1, threads);
}

}  // namespace

bool rows_applies(const ConvGeom& g, bool float32) {
  return float32 && g.G == 1 && g.dh == 1 && g.dw == 1 && g.C <= 4 && g.RS() * g.C >= 64 &&
         g.C * g.R <= kRowsMaxSegments;
}

int64_t rows_workspace_elems(const ConvGeom& g, int threads) {
  const RowsLayout l = rows_layout(g);
  return l.w_elems + rows_threads(g, threads) * l.buf_elems;
}

void rows_forward(const ConvGeom& g, const float* x, const float* w, const float* bias, float* y,
                  bool relu, float* ws, int threads) {
  const RowsLayout l = rows_layout(g);
  const RowsKernel& rk = rows_kernel();
  float* const wp = ws;
  pack_filters(g, l, w, wp);
  const int64_t panel_elems = l.segs * l.len * kRowsNR;
  parallel_for(g.N * g.Ho, rows_threads(g, threads), [&](int tid, int64_t begin, int64_t end) {
    float* const buf = ws + l.w_elems + tid * l.buf_elems;
    const float* rows[kRowsMaxSegments];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / g.Ho, ho = task % g.Ho;
      for (int64_t seg = 0; seg < l.segs; ++seg)
        fill_row(g, l, x, n, ho, seg, buf + seg * l.row_elems);
      float* yrow = y + n * g.ys[0] + ho * g.ys[2];
      for (int64_t p = 0; p < l.panels; ++p) {
        for (int64_t wo0 = 0; wo0 < g.Wo; wo0 += kRowsMR) {
          for (int64_t seg = 0; seg < l.segs; ++seg)
            rows[seg] = buf + seg * l.row_elems + wo0 * l.step;
          const int64_t k0 = p * kRowsNR;
          const RowsStore st{yrow + k0 * g.ys[1] + wo0 * g.ys[3],
                             g.ys[1],
                             g.ys[3],
                             static_cast<int>(std::min<int64_t>(kRowsMR, g.Wo - wo0)),
                             static_cast<int>(std::min<int64_t>(kRowsNR, g.K - k0)),
                             bias ? bias + k0 : nullptr,
                             relu};
          rk.tile(l.segs, rows, l.len, l.step, wp + p * panel_elems, st);
        }
      }
    }
  });
}

}  // namespace fastcnn::cpu
