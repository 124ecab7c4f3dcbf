// The Winograd F(4x4, 3x3) transforms, written once over kLanes independent lanes (channels
// for the input, filters for the weights and the output) and compiled per ISA: each ISA's
// translation unit includes this file, and the unnamed namespace gives every one its own copy
// built with its own flags (a shared inline definition could be merged across ISAs by the
// linker). Matrices are Lavin & Gray's for the points 0, +-1, +-2 and infinity.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cpu/conv2d_winograd.h"
#include "cpu/prefetch.h"
#include "cpu/transpose_8x8.h"
#include "cpu/vector_width.h"

namespace fastcnn::cpu {
namespace {

// The forward's lanes: 16 floats where vectors are 32 or 64 bytes, 8 on 16-byte vectors. (With
// 8 lanes instead of 16, AVX2 ran C5 and D2 at 0.83-0.92x the speed, C9 at 1.07-1.13x; the
// portable build ran 1.1-1.7x.)
constexpr int kLanes = kVectorBytes >= 32 ? 16 : 8;
static_assert(kLanes % 8 == 0, "the staging transposes move 8x8 blocks");
// kLanes floats as one value: GCC/Clang lower it to the vectors the flags allow.
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));

// The helpers below take any such vector type V of whole floats (the weight gradient's
// transforms use native vectors; conv2d_winograd_backward_weight_impl.h).
template <typename V>
constexpr int lanes_of = sizeof(V) / sizeof(float);

template <typename V = Vec>
inline V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename V>
inline void store(float* p, V v) {
  std::memcpy(p, &v, sizeof v);
}
// The first n lanes from p[l * stride], zero above.
template <typename V = Vec>
inline V load_lanes(const float* p, int64_t stride, int n) {
  alignas(64) float b[lanes_of<V>] = {};
  for (int l = 0; l < n; ++l) b[l] = p[l * stride];
  return load<V>(b);
}
template <typename V>
inline void store_lanes(float* p, int64_t stride, int n, V v) {
  alignas(64) float b[lanes_of<V>];
  store(b, v);
  if (n == lanes_of<V>)  // a fixed count, unrolled
    for (int l = 0; l < lanes_of<V>; ++l) p[l * stride] = b[l];
  else
    for (int l = 0; l < n; ++l) p[l * stride] = b[l];
}
// n contiguous values from p, zero above; and their store.
template <typename V = Vec>
inline V load_run(const float* p, int n) {
  return n == lanes_of<V> ? load<V>(p) : load_lanes<V>(p, 1, n);
}
template <typename V>
inline void store_run(float* p, int n, V v) {
  if (n == lanes_of<V>)
    store(p, v);
  else
    store_lanes(p, 1, n, v);
}

// r = B^T d.
template <typename V>
inline void input_1d(const V* d, V* r) {
  r[0] = 4.f * d[0] - 5.f * d[2] + d[4];
  r[1] = -4.f * (d[1] + d[2]) + (d[3] + d[4]);
  r[2] = 4.f * (d[1] - d[2]) + (d[4] - d[3]);
  r[3] = 2.f * (d[3] - d[1]) + (d[4] - d[2]);
  r[4] = 2.f * (d[1] - d[3]) + (d[4] - d[2]);
  r[5] = 4.f * d[1] - 5.f * d[3] + d[5];
}

// r = A^T m: six values in, four out.
template <typename V>
inline void output_1d(const V* m, V* r) {
  const V s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
  r[0] = m[0] + s12 + s34;
  r[1] = d12 + 2.f * d34;
  r[2] = s12 + 4.f * s34;
  r[3] = d12 + 8.f * d34 + m[5];
}

// r = G g: three values in, six out.
template <typename V>
inline void weight_1d(const V* g, V* r) {
  const V even = g[0] + g[2];
  r[0] = 0.25f * g[0];
  r[1] = (-1.f / 6.f) * (even + g[1]);
  r[2] = (-1.f / 6.f) * (even - g[1]);
  r[3] = (1.f / 24.f) * g[0] + (1.f / 12.f) * g[1] + (1.f / 6.f) * g[2];
  r[4] = (1.f / 24.f) * g[0] - (1.f / 12.f) * g[1] + (1.f / 6.f) * g[2];
  r[5] = g[2];
}

// out = L in L'^T for a 1-D transform f mapping I values to O: columns first, then rows.
template <int I, int O, auto f, typename V>
inline void transform_2d(const V (&in)[I][I], V (&out)[O][O]) {
  V cols[O][I];
  for (int j = 0; j < I; ++j) {
    V a[I], b[O];
    for (int i = 0; i < I; ++i) a[i] = in[i][j];
    f(a, b);
    for (int i = 0; i < O; ++i) cols[i][j] = b[i];
  }
  for (int i = 0; i < O; ++i) f(cols[i], out[i]);
}

// Tile coordinates of a flat tile index (image-major, then rows, then columns).
struct TileAt {
  int64_t n, y, x;  // image, and the tile's top-left output pixel
};
inline TileAt tile_at(const WinogradPlan& pl, int64_t tile) {
  const int64_t per_image = pl.tiles_h * pl.tiles_w, rem = tile % per_image;
  return {tile / per_image, rem / pl.tiles_w * 4, rem % pl.tiles_w * 4};
}

// The end of the run of tiles from panel index t (tile position at) that lie in one tile row,
// within the panel's first `count` tiles: runs are staged together.
inline int64_t run_end(const WinogradPlan& pl, int64_t t, int64_t count, const TileAt& at) {
  return std::min(count, t + pl.tiles_w - at.x / 4);
}

// Input columns one run of tiles of a tile row reads (4 per tile and 2 more), rounded up to
// whole 8x8 transposes.
constexpr int kStageCols = 4 * kWinogradMaxPanelRows + 8;
typedef float StagedRows[6][kStageCols][kLanes];

// NCHW rows of a run of `len` tiles of one tile row (image n, first tile's top-left output
// pixel (y, x0)) as channels_last: stage[i][col][lane] = x[n, c0 + lane, y - ph + i,
// x0 - pw + col], zero outside the image and from lane nl on. Whole 8x8 blocks move by
// transposes: a pixel's channels lie a plane apart, so loading them one by one cost a load
// per float and put 16 planes' lines in one L1 set when planes lie 4 KB apart.
void stage_nchw_rows(const ConvGeom& g, const float* x, int64_t n, int64_t y, int64_t x0, int len,
                     int64_t c0, int nl, StagedRows& stage) {
  const int cols = 4 * len + 2;
  for (int i = 0; i < 6; ++i) {
    const int64_t ih = y - g.ph + i;
    if (!in_range(ih, g.H)) {
      std::memset(stage[i], 0, cols * sizeof stage[i][0]);
      continue;
    }
    const float* row = x + n * g.xs[0] + c0 * g.xs[1] + ih * g.xs[2];
    for (int col0 = 0; col0 < cols; col0 += 8) {
      const int64_t iw0 = x0 - g.pw + col0;
      if (nl == kLanes && iw0 >= 0 && iw0 + 8 <= g.W) {
        for (int h = 0; h < kLanes; h += 8)
          transpose_8x8(row + h * g.xs[1] + iw0, g.xs[1], &stage[i][col0][h], kLanes);
        continue;
      }
      for (int col = col0; col < std::min(col0 + 8, cols); ++col) {
        const int64_t iw = iw0 + col - col0;
        for (int l = 0; l < kLanes; ++l)
          stage[i][col][l] = l < nl && in_range(iw, g.W) ? row[l * g.xs[1] + iw] : 0.f;
      }
    }
  }
}

// One panel of transformed input, V[xi][c][mr] (xi stride xi_stride), from mr tiles starting
// at tile0. Each tile's transform is vectorized over channels into a staging buffer; the
// buffer is then transposed into the micro-kernel's [c][mr] order.
// kUnit: channels are contiguous (channels_last), so full lane vectors load directly; NCHW
// rows with unit-stride pixels are first staged as channels_last, a run of tiles at a time.
template <bool kUnit>
void input_panel(const WinogradPlan& pl, const float* x, int64_t tile0, float* v,
                 int64_t xi_stride) {
  const ConvGeom& g = pl.g;
  const int mr = pl.mr;
  const bool staging = !kUnit && g.xs[3] == 1;
  // channels_last pixels of 8 or more channel groups: a tile's lines of the next group are
  // read mr tiles later, lines the hardware prefetchers did not bring in time (C7, 256
  // channels: 1.10x forward, 1.09x input gradient). Fewer groups gained nothing.
  const bool ahead = kUnit && g.C >= 8 * kLanes;
  alignas(64) float staged[36][kWinogradMaxPanelRows][kLanes];
  alignas(64) StagedRows rows;
  Vec d[6][6], r[6][6];
  for (int64_t c0 = 0; c0 < g.C; c0 += kLanes) {
    const int nl = static_cast<int>(std::min<int64_t>(kLanes, g.C - c0));
    int run0 = 0, run1 = 0;  // the staged run of tiles [run0, run1)
    for (int tm = 0; tm < mr; ++tm) {
      if (tile0 + tm >= pl.tiles) {
        for (int xi = 0; xi < 36; ++xi) store(staged[xi][tm], Vec{});
        continue;
      }
      const TileAt at = tile_at(pl, tile0 + tm);
      if (staging) {
        if (tm == run1) {  // the run goes on to the end of the panel or of the tile row
          run0 = tm;
          run1 = static_cast<int>(run_end(pl, tm, std::min<int64_t>(mr, pl.tiles - tile0), at));
          stage_nchw_rows(g, x, at.n, at.y, at.x, run1 - run0, c0, nl, rows);
        }
        for (int i = 0; i < 6; ++i)
          for (int j = 0; j < 6; ++j) d[i][j] = load(rows[i][4 * (tm - run0) + j]);
      } else {
        const float* xn = x + at.n * g.xs[0] + c0 * g.xs[1];
        for (int i = 0; i < 6; ++i) {
          const int64_t yy = at.y - g.ph + i;
          for (int j = 0; j < 6; ++j) {
            const int64_t xx = at.x - g.pw + j;
            const float* p = xn + yy * g.xs[2] + xx * g.xs[3];
            if (!in_range(yy, g.H) || !in_range(xx, g.W))
              d[i][j] = Vec{};
            else if (kUnit && nl == kLanes)
              d[i][j] = load(p);
            else
              d[i][j] = load_lanes(p, g.xs[1], nl);
          }
        }
        if (ahead && c0 + kLanes < g.C) {  // into L2: it was the latency from L3 that stalled
          const float* next = xn + (at.y - g.ph) * g.xs[2] + (at.x - g.pw) * g.xs[3] + kLanes;
          for (int i = 0; i < 6; ++i)
            for (int j = 0; j < 6; ++j) prefetch_at<2>(next, i * g.xs[2] + j * g.xs[3]);
        }
      }
      transform_2d<6, 6, input_1d<Vec>>(d, r);
      for (int xi = 0; xi < 36; ++xi) store(staged[xi][tm], r[xi / 6][xi % 6]);
    }
    for (int xi = 0; xi < 36; ++xi) {
      float* dst = v + xi * xi_stride + c0 * mr;
      if (mr == 8 && nl == kLanes) {
        for (int l0 = 0; l0 < kLanes; l0 += 8)
          transpose_8x8(staged[xi][0] + l0, kLanes, dst + l0 * 8, 8);
        continue;
      }
      for (int l = 0; l < nl; ++l)
        for (int tm = 0; tm < mr; ++tm) dst[l * mr + tm] = staged[xi][tm][l];
    }
  }
}

template <bool kUnit>
void input_block(const WinogradPlan& pl, const float* x, int64_t tile0, int64_t p0, int64_t p1,
                 float* v) {
  const int64_t panel_elems = pl.g.C * pl.mr, xi_stride = pl.panels * panel_elems;
  for (int64_t p = p0; p < p1; ++p)
    input_panel<kUnit>(pl, x, tile0 + p * pl.mr, v + p * panel_elems, xi_stride);
}

// kUnit: filters are contiguous in the output (channels_last). NCHW outputs with unit-stride
// pixels are staged a run of tiles at a time and stored by transposes.
template <bool kUnit>
void output_panel(const WinogradPlan& pl, const float* m, int64_t xi_stride, int64_t tile0,
                  int64_t kchunk, const float* bias, bool relu, float* y) {
  const ConvGeom& g = pl.g;
  const int64_t nr = pl.nr;
  const bool staging = !kUnit && g.ys[3] == 1;
  alignas(64) float staged[4][kStageCols][kLanes];
  Vec mm[6][6], o[4][4];
  const int64_t tiles = std::min<int64_t>(pl.mr, pl.tiles - tile0);
  for (int64_t b0 = 0, b1 = 0; b0 < tiles; b0 = b1) {
    const TileAt at0 = tile_at(pl, tile0 + b0);
    b1 = staging ? run_end(pl, b0, tiles, at0) : b0 + 1;
    // Unstaged, a run is one tile, at at0.
    const int oh = static_cast<int>(std::min<int64_t>(4, g.Ho - at0.y));
    const int ow = static_cast<int>(std::min<int64_t>(4, g.Wo - at0.x));
    for (int64_t j0 = 0; j0 < nr; j0 += kLanes) {
      const int64_t k0 = kchunk * nr + j0;
      const int nl = static_cast<int>(std::min<int64_t>({kLanes, nr - j0, g.K - k0}));
      if (nl <= 0) break;
      const Vec bl = bias == nullptr ? Vec{} : load_run(bias + k0, nl);
      float* yt = y + at0.n * g.ys[0] + k0 * g.ys[1] + at0.y * g.ys[2] + at0.x * g.ys[3];
      for (int64_t b = b0; b < b1; ++b) {
        const float* src = m + b * nr + j0;  // + xi * xi_stride
        for (int xi = 0; xi < 36; ++xi) mm[xi / 6][xi % 6] = load_run(src + xi * xi_stride, nl);
        transform_2d<6, 4, output_1d<Vec>>(mm, o);
        const int col = static_cast<int>(4 * (b - b0));
        for (int i = 0; i < 4; ++i) {
          for (int j = 0; j < 4; ++j) {
            Vec out = o[i][j] + bl;
            if (relu) out = relu_lanes(out);
            if (staging) {
              store(staged[i][col + j], out);
            } else if (i < oh && j < ow) {
              float* p = yt + i * g.ys[2] + j * g.ys[3];
              if (kUnit && nl == kLanes)
                store(p, out);
              else
                store_lanes(p, g.ys[1], nl, out);
            }
          }
        }
      }
      if (!staging) continue;
      const int cols = static_cast<int>(std::min<int64_t>(4 * (b1 - b0), g.Wo - at0.x));
      for (int i = 0; i < oh; ++i)
        transpose_into(staged[i][0], kLanes, cols, nl, yt + i * g.ys[2], g.ys[1], 1);
    }
  }
}

// Channels [c0, c0 + n) of filters [k0, k0 + nk) as stage[(c - c0) * 9 + 3 * r + s][j]
// (row stride nr), zero from filter nk on. Weights come as NCHW or NHWC (validate() gives
// nothing else), seen directly by the forward or flipped and exchanged by backward-input
// (for a strided layer, one phase's taps of them): views with runs move by 8x8 transposes
// (filters into lanes), or by copies where filters are innermost; a phase's taps of NCHW
// weights lie apart and go one by one.
void repack_stage(const ConvGeom& g, int64_t nr, const float* w, int64_t k0, int64_t nk, int64_t c0,
                  int64_t n, float* stage) {
  const float* src = w + k0 * g.ws[0] + c0 * g.ws[1];
  const int64_t taps = 9 * n;
  auto tap = [&](int rs) { return rs / 3 * g.ws[2] + rs % 3 * g.ws[3]; };
  if (g.ws[1] == 9 && g.ws[2] == 3 && g.ws[3] == 1) {
    transpose_into(src, g.ws[0], nk, taps, stage, nr, 1);
  } else if (g.ws[1] == 1) {
    for (int rs = 0; rs < 9; ++rs)
      transpose_into(src + tap(rs), g.ws[0], nk, n, stage + rs * nr, 9 * nr, 1);
  } else if (g.ws[2] == -3 && g.ws[3] == -1) {
    for (int64_t c = 0; c < n; ++c) {
      // Each channel's run is short and a filter away from the next: the next stage's runs
      // are asked for ahead.
      if (c0 + n + c < g.C)
        for (int64_t t = 0; t < 9 * nk; t += 16)
          __builtin_prefetch(src + (n + c) * g.ws[1] - 8 + t);
      transpose_into(src + c * g.ws[1] - 8, g.ws[0], nk, 9, stage + (c * 9 + 8) * nr, -nr, 1);
    }
  } else if (g.ws[0] == 1) {  // filters innermost: the flipped view of channels_last weights
    for (int64_t c = 0; c < n; ++c)
      for (int rs = 0; rs < 9; ++rs)
        std::copy_n(src + c * g.ws[1] + tap(rs), nk, stage + (c * 9 + rs) * nr);
  } else {  // a strided backward-input's phase of NCHW weights: taps two or more apart
    for (int64_t c = 0; c < n; ++c)
      for (int64_t j = 0; j < nk; ++j)
        for (int rs = 0; rs < 9; ++rs)
          stage[(c * 9 + rs) * nr + j] = src[j * g.ws[0] + c * g.ws[1] + tap(rs)];
  }
  if (nk < nr)
    for (int64_t t = 0; t < taps; ++t) std::fill(stage + t * nr + nk, stage + (t + 1) * nr, 0.f);
}

// Channels [c0, c1) of filter chunk kchunk transformed: u[xi * xi_stride + (c - c0) * nr + j].
// kWinogradStageChannels channels at a time are repacked into the stage (in L1), then each
// channel's 9 taps of kLanes filters are transformed to all 36 values at once.
void weights(const WinogradPlan& pl, const float* w, int64_t kchunk, int64_t c0, int64_t c1,
             float* u, int64_t xi_stride, float* stage) {
  const int64_t nr = pl.nr, k0 = kchunk * nr, nk = std::min(nr, pl.g.K - k0);
  Vec gg[3][3], t[6][6];
  for (int64_t cs = c0; cs < c1; cs += kWinogradStageChannels) {
    const int64_t n = std::min<int64_t>(kWinogradStageChannels, c1 - cs);
    repack_stage(pl.g, nr, w, k0, nk, cs, n, stage);
    for (int64_t c = 0; c < n; ++c) {
      for (int64_t j0 = 0; j0 < nr; j0 += kLanes) {
        const int nl = static_cast<int>(std::min<int64_t>(kLanes, nr - j0));
        const float* src = stage + c * 9 * nr + j0;
        for (int rs = 0; rs < 9; ++rs) gg[rs / 3][rs % 3] = load_run(src + rs * nr, nl);
        transform_2d<3, 6, weight_1d<Vec>>(gg, t);
        float* dst = u + (cs - c0 + c) * nr + j0;
        if (nl == kLanes) {
#pragma GCC unroll 6
          for (int i = 0; i < 6; ++i)
#pragma GCC unroll 6
            for (int j = 0; j < 6; ++j) store(dst + (6 * i + j) * xi_stride, t[i][j]);
        } else {
          for (int xi = 0; xi < 36; ++xi)
            store_lanes(dst + xi * xi_stride, 1, nl, t[xi / 6][xi % 6]);
        }
      }
    }
  }
}

void input_any(const WinogradPlan& pl, const float* x, int64_t tile0, int64_t p0, int64_t p1,
               float* v) {
  if (pl.g.xs[1] == 1) return input_block<true>(pl, x, tile0, p0, p1, v);
  input_block<false>(pl, x, tile0, p0, p1, v);
}

void output_any(const WinogradPlan& pl, const float* m, int64_t xi_stride, int64_t tile0,
                int64_t kchunk, const float* bias, bool relu, float* y) {
  if (pl.g.ys[1] == 1) return output_panel<true>(pl, m, xi_stride, tile0, kchunk, bias, relu, y);
  output_panel<false>(pl, m, xi_stride, tile0, kchunk, bias, relu, y);
}

WinogradTransforms make_winograd_transforms() {
  return {&weights, &input_any, &output_any};
}

}  // namespace
}  // namespace fastcnn::cpu
