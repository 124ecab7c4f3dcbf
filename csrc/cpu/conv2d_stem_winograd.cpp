// The stem path's driver: filters transformed once per call; tasks are (image, band of output
// rows), each transforming the input rows its band reads and running every (output row, group
// of kRowsMR tiles, filter panel) over them.
#include "cpu/conv2d_stem_winograd.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "cpu/isa_select.h"
#include "cpu/parallel.h"
#include "fastcnn/ops.h"

namespace fastcnn::cpu {
namespace {

const StemTransforms& transforms() {
  static const StemTransforms chosen = FASTCNN_FOR_CHOSEN_ISA(stem_transforms);
  return chosen;
}

// Output rows per task before the bands are evened out over threads: a band reads
// (rows - 1) * sh + R input rows, so longer bands transform fewer rows twice.
constexpr int64_t kBandRows = 16;
constexpr int64_t kGroupPositions = kRowsMR * kStemOut;

// Buffer sizes and the band split, computed the same for sizing and running.
struct StemLayout {
  int64_t segs;                       // (channel, kernel row) pairs
  int64_t groups;                     // groups of kRowsMR tiles per output row
  int64_t row_floats;                 // one transformed input row: groups * kRowsMR tiles
  int64_t pad_floats;                 // one zero-padded input row, as far as the last tile reads
  int64_t panels;                     // filter panels of kRowsNR
  int64_t bands, band_rows, in_rows;  // per image; output rows per band; input rows it reads
  int threads;                        // at most one per task
  int64_t u_elems, bias_elems, shared_elems, thread_elems;
};

StemLayout stem_layout(const ConvGeom& g, int threads) {
  StemLayout l;
  l.segs = g.C * g.R;
  l.groups = ceil_div(g.Wo, kGroupPositions);
  const int64_t tiles = l.groups * kRowsMR;
  l.row_floats = tiles * kStemLanes;
  l.pad_floats = round_up(2 * kStemOut * (tiles - 1) + kStemLanes, 16);
  l.panels = ceil_div(g.K, kRowsNR);
  // As many tasks as threads can share evenly, where the rows allow.
  int64_t bands = ceil_div(g.Ho, kBandRows);
  while (g.N * bands % std::max(threads, 1) != 0 && bands < g.Ho) ++bands;
  l.band_rows = ceil_div(g.Ho, bands);
  l.bands = ceil_div(g.Ho, l.band_rows);
  l.in_rows = (l.band_rows - 1) * g.sh + g.R;
  l.threads = threads_for(g.N * l.bands, 1, threads);
  l.u_elems = l.panels * kStemPoints * l.segs * 2 * kRowsNR;
  l.bias_elems = l.panels * kRowsNR;
  l.shared_elems = l.u_elems + l.bias_elems + l.row_floats;
  l.thread_elems =
      g.C * (l.in_rows * l.row_floats + l.pad_floats) + kStemPoints * kRowsMR * kRowsNR;
  return l;
}

// u[panel][xi][seg][a][j] = sum_t G[xi][t] w[k, c, r, 2 t + a], zero past S and past K.
void transform_filters(const ConvGeom& g, const StemLayout& l, const float* w, float* u,
                       int threads) {
  parallel_for(l.panels * l.segs, threads, [&](int, int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t p = task / l.segs, seg = task % l.segs, c = seg / g.R, r = seg % g.R;
      for (int a = 0; a < 2; ++a) {
        float taps[kStemTaps][kRowsNR] = {};
        for (int64_t j = 0; j < std::min<int64_t>(kRowsNR, g.K - p * kRowsNR); ++j)
          for (int t = 0; t < kStemTaps && 2 * t + a < g.S; ++t)
            taps[t][j] =
                w[(p * kRowsNR + j) * g.ws[0] + c * g.ws[1] + r * g.ws[2] + (2 * t + a) * g.ws[3]];
        for (int xi = 0; xi < kStemPoints; ++xi) {
          float* dst = u + (((p * kStemPoints + xi) * l.segs + seg) * 2 + a) * kRowsNR;
          for (int64_t j = 0; j < kRowsNR; ++j) {
            float sum = 0.f;
            for (int t = 0; t < kStemTaps; ++t) sum += kStemG[xi][t] * taps[t][j];
            dst[j] = sum;
          }
        }
      }
    }
  });
}

// Every channel's padded row ih of image n: xpad[c * pad_floats + i] = x[n, c, ih, i - pw],
// zero outside the row, for i < pad_floats. NHWC rows of 2 to 4 dense channels are read once
// per channel, other NHWC rows once, pixel by pixel.
void fill_padded_rows(const ConvGeom& g, const StemLayout& l, const float* x, int64_t n, int64_t ih,
                      float* xpad) {
  const int64_t begin = std::min(g.pw, l.pad_floats);
  const int64_t width = std::clamp<int64_t>(l.pad_floats - g.pw, 0, g.W);
  const float* src = x + n * g.xs[0] + ih * g.xs[2];
  for (int64_t c = 0; c < g.C; ++c) {
    float* row = xpad + c * l.pad_floats;
    std::memset(row, 0, begin * sizeof(float));
    std::memset(row + begin + width, 0, (l.pad_floats - begin - width) * sizeof(float));
    if (g.xs[3] == 1) std::memcpy(row + begin, src + c * g.xs[1], width * sizeof(float));
  }
  if (g.xs[3] == 1) return;
  // Dense pixels of 2 to 4 channels (the stem's NHWC rows): with the count a constant the copy
  // vectorizes.
  auto deinterleave = [&](auto channels) {
    constexpr int64_t C = decltype(channels)::value;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < width; ++i) xpad[c * l.pad_floats + begin + i] = src[i * C + c];
  };
  if (g.xs[1] == 1 && g.xs[3] == g.C) {
    if (g.C == 2) return deinterleave(std::integral_constant<int64_t, 2>{});
    if (g.C == 3) return deinterleave(std::integral_constant<int64_t, 3>{});
    if (g.C == 4) return deinterleave(std::integral_constant<int64_t, 4>{});
  }
  for (int64_t i = 0; i < width; ++i)
    for (int64_t c = 0; c < g.C; ++c)
      xpad[c * l.pad_floats + begin + i] = src[i * g.xs[3] + c * g.xs[1]];
}

}  // namespace

bool stem_winograd_applies(const ConvGeom& g, bool float32) {
  return conv_algorithm() != ConvAlgorithm::Direct && rows_applies(g, float32) && g.sw == 2 &&
         g.S >= 5 && g.S <= 2 * kStemTaps;
}

int64_t stem_winograd_workspace_elems(const ConvGeom& g, int threads) {
  const StemLayout l = stem_layout(g, threads);
  return l.shared_elems + l.threads * l.thread_elems;
}

void stem_winograd_forward(const ConvGeom& g, const float* x, const float* w, const float* bias,
                           float* y, bool relu, float* ws, int threads) {
  const StemLayout l = stem_layout(g, threads);
  const RowsKernel& rk = rows_kernel();
  const StemTransforms& tf = transforms();
  float* const u = ws;
  float* const bias_pad = u + l.u_elems;
  float* const zero_row = bias_pad + l.bias_elems;
  transform_filters(g, l, w, u, l.threads);
  std::fill_n(bias_pad, l.bias_elems, 0.f);
  if (bias) std::copy_n(bias, g.K, bias_pad);
  std::fill_n(zero_row, l.row_floats, 0.f);
  const int64_t tiles = l.groups * kRowsMR, chunk_elems = l.segs * 2 * kRowsNR;
  parallel_for(g.N * l.bands, l.threads, [&](int tid, int64_t begin, int64_t end) {
    float* const v = ws + l.shared_elems + tid * l.thread_elems;
    float* const xpad = v + g.C * l.in_rows * l.row_floats;
    float* const m = xpad + g.C * l.pad_floats;
    const float* base[kRowsMaxSegments];
    const float* rows[kRowsMaxSegments];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / l.bands, oh0 = task % l.bands * l.band_rows;
      const int64_t oh1 = std::min(g.Ho, oh0 + l.band_rows), ih0 = oh0 * g.sh - g.ph;
      for (int64_t i = 0; i < (oh1 - 1 - oh0) * g.sh + g.R; ++i) {
        if (!in_range(ih0 + i, g.H)) continue;
        fill_padded_rows(g, l, x, n, ih0 + i, xpad);
        for (int64_t c = 0; c < g.C; ++c)
          tf.input(xpad + c * l.pad_floats, tiles, v + (c * l.in_rows + i) * l.row_floats);
      }
      for (int64_t oh = oh0; oh < oh1; ++oh) {
        for (int64_t seg = 0; seg < l.segs; ++seg) {
          const int64_t c = seg / g.R, ih = oh * g.sh - g.ph + seg % g.R;
          base[seg] = in_range(ih, g.H) ? v + (c * l.in_rows + ih - ih0) * l.row_floats : zero_row;
        }
        for (int64_t grp = 0; grp < l.groups; ++grp) {
          for (int64_t p = 0; p < l.panels; ++p) {
            for (int xi = 0; xi < kStemPoints; ++xi) {
              for (int64_t seg = 0; seg < l.segs; ++seg)
                rows[seg] = base[seg] + grp * kRowsMR * kStemLanes + 2 * xi;
              const RowsStore st{
                  m + xi * kRowsMR * kRowsNR, 1, kRowsNR, kRowsMR, kRowsNR, nullptr, false};
              rk.tile(l.segs, rows, 2, kStemLanes, u + (p * kStemPoints + xi) * chunk_elems, st);
            }
            const int64_t k0 = p * kRowsNR, pos0 = grp * kGroupPositions;
            const StemStore st{y + n * g.ys[0] + k0 * g.ys[1] + oh * g.ys[2] + pos0 * g.ys[3],
                               g.ys[1],
                               g.ys[3],
                               static_cast<int>(std::min(kGroupPositions, g.Wo - pos0)),
                               static_cast<int>(std::min<int64_t>(kRowsNR, g.K - k0)),
                               bias_pad + k0,
                               relu};
            tf.output(m, st);
          }
        }
      }
    }
  });
}

}  // namespace fastcnn::cpu
