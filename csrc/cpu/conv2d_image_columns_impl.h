// The forward image packer, written once over the ISA's native vectors (cpu/vector_width.h)
// and compiled per ISA: each ISA's translation unit includes this file, and the unnamed
// namespace gives every one its own copy built with its own flags. (Over 64-byte vectors on
// every ISA, AVX2 took C10's NCHW forward 1.38x and D1's 1.33x as long.)
//
// Each reduction row (c, r, s) is gathered into a line along output rows, then copied into the
// panels; or, for row windows, each (input row, c, s) straight into its staged row. Along a row
// of unit-stride input columns, stride 1 is one unaligned load a vector and stride 2 two loads
// and one shuffle of their even lanes (the three taps of a 3-wide kernel row share those
// loads; at stride 1 they are shifts of one load); columns in the padding are zeroed by a
// compare against the row width, not by masked loads (with the partial masks of every row's
// edges, masked loads made the gather 2.5x slower on Zen 4). A vector's loads may run past its
// row into the neighbouring rows of the plane, never outside the plane: vectors that would are
// taken from the nearest whole vector inside it, permuted (lane by lane in planes shorter
// than a vector).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "cpu/conv2d_image_columns.h"
#include "cpu/gemm_driver.h"
#include "cpu/vector_width.h"

namespace fastcnn::cpu {
namespace {

template <typename T>
struct ColumnVec {
  static constexpr int64_t lanes = kVectorBytes / sizeof(T);
  typedef T V __attribute__((vector_size(kVectorBytes)));
  using Index = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  typedef Index I __attribute__((vector_size(kVectorBytes)));

  [[gnu::always_inline]] static V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  // A load the compiler may not merge with the select that follows it: AVX-512 builds would
  // make the pair one masked load (or a masked shuffle from memory), which the partial masks
  // of a row's edges make several times slower on Zen 4.
  [[gnu::always_inline]] static V load_whole(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof v);
#if defined(__AVX512F__)
    asm("" : "+v"(v));
#endif
    return v;
  }
  [[gnu::always_inline]] static void store(T* p, V v) { std::memcpy(p, &v, sizeof v); }
  // {0, step, 2 * step, ...}: loaded as one constant, where lane-by-lane inserts would be a
  // serial chain.
  template <int64_t Step>
  static constexpr std::array<Index, lanes> lane_steps = [] {
    std::array<Index, lanes> s{};
    for (int64_t l = 0; l < lanes; ++l) s[l] = static_cast<Index>(l * Step);
    return s;
  }();
  template <size_t... L>
  [[gnu::always_inline]] static V even_lanes(V lo, V hi, std::index_sequence<L...>) {
    return __builtin_shufflevector(lo, hi, (2 * L)...);
  }
  template <size_t... L>
  [[gnu::always_inline]] static V odd_lanes(V lo, V hi, std::index_sequence<L...>) {
    return __builtin_shufflevector(lo, hi, (2 * L + 1)...);
  }
  // lo's lanes from lane Shift on, then hi's first Shift lanes.
  template <size_t Shift, size_t... L>
  [[gnu::always_inline]] static V lanes_on(V lo, V hi, std::index_sequence<L...>) {
    return __builtin_shufflevector(lo, hi, (L + Shift)...);
  }
};

// The Vectors * lanes elements of the plane from `first` on; elements outside the plane read
// as 0 and no load leaves the plane.
template <int64_t Vectors, typename T, typename V = typename ColumnVec<T>::V>
[[gnu::always_inline]] inline void load_span(const T* plane, int64_t plane_len, int64_t first,
                                             V (&v)[Vectors]) {
  using C = ColumnVec<T>;
  if (first >= 0 && first + Vectors * C::lanes <= plane_len) {
    for (int64_t i = 0; i < Vectors; ++i) v[i] = C::load_whole(plane + first + i * C::lanes);
    return;
  }
  for (int64_t i = 0; i < Vectors; ++i) {
    const int64_t at = first + i * C::lanes;
    // AVX-512 permutes a whole vector by a variable index in one instruction (the other
    // builds were not measured; clang has no __builtin_shuffle): the nearest whole vector
    // inside the plane, its lanes moved into place, where lane-by-lane inserts cost a 4x4
    // plane's packing 1.2 us of a 4 us binding call.
#if defined(__AVX512F__) && !defined(__clang__)
    if (plane_len >= C::lanes) {
      using Index = typename C::Index;
      typename C::I lane;
      std::memcpy(&lane, C::template lane_steps<1>.data(), sizeof lane);
      const int64_t inside = std::clamp<int64_t>(at, 0, plane_len - C::lanes);
      const V moved =
          __builtin_shuffle(C::load(plane + inside), lane + static_cast<Index>(at - inside));
      // Unsigned: elements before the plane compare large.
      v[i] = lane + static_cast<Index>(at) < static_cast<Index>(plane_len) ? moved : V{};
      continue;
    }
#endif
    v[i] = V{};
    for (int64_t l = 0; l < C::lanes; ++l)
      if (in_range(at + l, plane_len)) v[i][l] = plane[at + l];
  }
}

// line[t] = row[a + t * Step] for t < n where that column lies in [0, W), else 0; whole
// vectors are stored, so up to a vector past n is written too. row = plane + row_off; every
// load stays in the plane's [0, plane_len) elements.
template <int64_t Step, typename T>
void gather_run(const T* plane, int64_t plane_len, int64_t row_off, int64_t W, int64_t a, int64_t n,
                T* line) {
  using C = ColumnVec<T>;
  using Index = typename C::Index;
  typename C::I col;
  std::memcpy(&col, C::template lane_steps<Step>.data(), sizeof col);
  col += static_cast<Index>(a);
  const typename C::I width = typename C::I{} + static_cast<Index>(W);
  for (int64_t t = 0; t < n; t += C::lanes, a += C::lanes * Step) {
    typename C::V w[Step], v;
    load_span<Step>(plane, plane_len, row_off + a, w);
    if constexpr (Step == 1)
      v = w[0];
    else
      v = C::even_lanes(w[0], w[1], std::make_index_sequence<C::lanes>{});
    v = col < width ? v : typename C::V{};  // unsigned: negative columns compare large
    C::store(line + t, v);
    col += static_cast<Index>(C::lanes * Step);
  }
}

// The three taps of a kernel row one column apart (3 wide, undilated), at column stride
// Step 1 or 2: line_s[t] = row[a + s + Step * t], zero outside [0, W). Each vector of tap 0
// comes from Step loads (Step 2: their even lanes); tap 2 is tap 0 shifted by 2 / Step
// outputs, and tap 1 is tap 0 shifted by one output (Step 1) or the odd lanes of the same
// loads (Step 2): a third of the loads, compares and run setup of three single-tap passes.
template <int64_t Step, typename T>
void gather_run_three_taps(const T* plane, int64_t plane_len, int64_t row_off, int64_t W, int64_t a,
                           int64_t n, T* line0, T* line1, T* line2) {
  using C = ColumnVec<T>;
  using Index = typename C::Index;
  using V = typename C::V;
  using I = typename C::I;
  constexpr auto lanes = std::make_index_sequence<C::lanes>{};
  auto tap0 = [&](const V(&w)[Step]) {
    if constexpr (Step == 1)
      return w[0];
    else
      return C::even_lanes(w[0], w[1], lanes);
  };
  I col;  // tap 0's columns
  std::memcpy(&col, C::template lane_steps<Step>.data(), sizeof col);
  col += static_cast<Index>(a);
  const I width = I{} + static_cast<Index>(W);
  V w[Step];
  load_span<Step>(plane, plane_len, row_off + a, w);
  V first = tap0(w);
  first = col < width ? first : V{};
  for (int64_t t = 0; t < n; t += C::lanes, a += Step * C::lanes) {
    V mid;
    if constexpr (Step == 2) {
      mid = C::odd_lanes(w[0], w[1], lanes);
      mid = col + 1 < width ? mid : V{};
    }
    load_span<Step>(plane, plane_len, row_off + a + Step * C::lanes, w);
    col += static_cast<Index>(Step * C::lanes);
    V next = tap0(w);
    next = col < width ? next : V{};
    if constexpr (Step == 1) mid = C::template lanes_on<1>(first, next, lanes);
    C::store(line0 + t, first);
    C::store(line1 + t, mid);
    C::store(line2 + t, C::template lanes_on<2 / Step>(first, next, lanes));
    first = next;
  }
}

// Any other input: element by element.
template <typename T>
void gather_run_any(const ConvGeom& g, const T* plane, int64_t ih, int64_t a, int64_t n, T* line) {
  for (int64_t t = 0; t < n; ++t) {
    const int64_t iw = a + t * g.sw;
    line[t] = in_range(iw, g.W) ? plane[ih * g.xs[2] + iw * g.xs[3]] : T(0);
  }
}

// Input rows whose columns are unit-stride, read at column stride 1 or 2: gathered a vector at
// a time (images are dense NCHW or NHWC, the binding checks: NCHW rows lie back to back).
inline bool rows_vectorize(const ConvGeom& g) {
  return g.xs[3] == 1 && g.sw <= 2;
}

// Whether a kernel row's three column taps can come from shared loads.
inline bool three_taps_fit(const ConvGeom& g) {
  return rows_vectorize(g) && g.S == 3 && g.dw == 1;
}

// A run of n outputs from input row ih (inside the image) for `taps` consecutive column taps
// from input column a on, into lines[0, taps): three (where three_taps_fit) from shared loads,
// one a vector at a time where rows_vectorize, else element by element.
template <typename T>
void gather_row_run(const ConvGeom& g, const T* plane, int64_t ih, int64_t a, int64_t n,
                    int64_t taps, T* const (&lines)[3]) {
  const int64_t plane_len = (g.H - 1) * g.xs[2] + g.W, row_off = ih * g.xs[2];
  if (taps == 3 && g.sw == 1)
    gather_run_three_taps<1>(plane, plane_len, row_off, g.W, a, n, lines[0], lines[1], lines[2]);
  else if (taps == 3)
    gather_run_three_taps<2>(plane, plane_len, row_off, g.W, a, n, lines[0], lines[1], lines[2]);
  else if (!rows_vectorize(g))
    gather_run_any(g, plane, ih, a, n, lines[0]);
  else if (g.sw == 1)
    gather_run<1>(plane, plane_len, row_off, g.W, a, n, lines[0]);
  else
    gather_run<2>(plane, plane_len, row_off, g.W, a, n, lines[0]);
}

template <typename T>
void copy_run(const T* src, T* dst, int64_t n) {
  using C = ColumnVec<T>;
  int64_t t = 0;
  for (; t + C::lanes <= n; t += C::lanes) C::store(dst + t, C::load(src + t));
  for (; t < n; ++t) dst[t] = src[t];
}

template <typename T>
void pack_image_columns(const ImageColumns<T>& b, int64_t k0, int64_t kc, T* dst) {
  using C = ColumnVec<T>;
  const ConvGeom& g = b.g;
  const int64_t nr = b.nr, ncols = b.ncols;
  const bool flat = positions_are_flat(g);  // one run a panel
  // Three taps at once at column stride 2 (stride 1 was not measured here; row windows use it).
  const bool three_taps = three_taps_fit(g) && g.sw == 2;
  const int64_t oh0 = b.p0 / g.Wo, ow0 = b.p0 % g.Wo;
  // The input rows this chunk of positions reads, as a span of each plane.
  const int64_t ih0 = std::max<int64_t>(0, oh0 * g.sh - g.ph);
  const int64_t ih1 =
      std::min<int64_t>(g.H, (b.p0 + ncols - 1) / g.Wo * g.sh - g.ph + (g.R - 1) * g.dh + 1);
  // The plan's column chunks are at most kBlockN wide; a line per tap of a kernel row.
  alignas(64) T lines[3][kBlockN + C::lanes];
  for (int64_t kk = 0; kk < kc;) {
    const int64_t j = k0 + kk, c = j / g.RS(), rs = j % g.RS();
    const T* plane = b.x + c * g.xs[1];
    const int64_t dh = rs / g.S * g.dh - g.ph, dw = rs % g.S * g.dw - g.pw;
    const T* src = lines[0];
    int64_t taps = 1;
    if (flat && g.xs[3] == 1) {
      src = plane + b.p0;
    } else if (flat) {
      for (int64_t jj = 0; jj < ncols; ++jj) lines[0][jj] = plane[(b.p0 + jj) * g.xs[3]];
    } else {
      // The next channel's rows on their way to L2 while this one's are gathered: the
      // hardware prefetchers miss the stride-2 walk over every other row (C10's packing
      // alone, one thread: 2.8-2.9 -> 2.4-2.6 ms).
      if (rows_vectorize(g) && rs == 0 && c + 1 < g.Cg && ih1 > ih0) {
        const char* next = reinterpret_cast<const char*>(plane + g.xs[1] + ih0 * g.xs[2]);
        const int64_t bytes = ((ih1 - ih0 - 1) * g.xs[2] + g.W) * int64_t{sizeof(T)};
        for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(next + o, 0, 2);
      }
      if (three_taps && rs % 3 == 0 && kk + 3 <= kc) taps = 3;
      // Runs along output rows, in order: each input row streams in order.
      for (int64_t jj = 0, oh = oh0, ow = ow0; jj < ncols; ow = 0, ++oh) {
        const int64_t len = std::min(ncols - jj, g.Wo - ow), ih = oh * g.sh + dh;
        const int64_t a = ow * g.sw + dw;
        if (!in_range(ih, g.H)) {
          for (int64_t tap = 0; tap < taps; ++tap)
            for (int64_t t = 0; t < len; t += C::lanes)
              C::store(lines[tap] + jj + t, typename C::V{});
        } else {
          gather_row_run(g, plane, ih, a, len, taps, {lines[0] + jj, lines[1] + jj, lines[2] + jj});
        }
        jj += len;
      }
    }
    for (int64_t tap = 0; tap < taps; ++tap, ++kk) {
      T* d = dst + kk * nr;
      const T* line = tap == 0 ? src : lines[tap];
      for (int64_t jj = 0; jj < ncols; jj += nr, d += nr * kc) {
        const int64_t cols = std::min(nr, ncols - jj);
        copy_run(line + jj, d, cols);
        std::fill(d + cols, d + nr, T(0));
      }
    }
  }
}

// See StageRowWindowsFn (conv2d_image_columns.h). Rows are nr long, a multiple of the vector
// (the plan's condition), so the gathers write exactly each row.
template <typename T>
void stage_row_windows(const ImageColumns<T>& b, T* dst) {
  const ConvGeom& g = b.g;
  const int64_t nr = b.nr, oh0 = b.p0 / g.Wo, rows = b.ncols / g.Wo + g.R - 1;
  const int64_t taps = three_taps_fit(g) ? 3 : 1;
  for (int64_t y = 0; y < rows; ++y) {
    const int64_t ih = oh0 - g.ph + y;
    for (int64_t c = 0; c < g.Cg; ++c) {
      T* d = dst + (y * g.Cg + c) * g.S * nr;
      const T* plane = b.x + c * g.xs[1];
      if (!in_range(ih, g.H)) {
        std::fill(d, d + g.S * nr, T(0));
        continue;
      }
      for (int64_t s = 0; s < g.S; s += taps, d += taps * nr)
        gather_row_run(g, plane, ih, s * g.dw - g.pw, g.Wo, taps, {d, d + nr, d + 2 * nr});
    }
  }
}

}  // namespace
}  // namespace fastcnn::cpu
