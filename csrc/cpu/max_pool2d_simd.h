// The max-pooling row kernels, written once over PoolVec<T> (the including translation unit
// defines it for its ISA first: cpu/{generic,avx2,avx512}/pool_vec.h) and compiled per ISA.
// Everything here has internal linkage, so the copies compiled with different ISA flags
// never stand in for one another at link time.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "cpu/max_pool2d_kernels.h"

namespace fastcnn::cpu {
namespace {

// Column taps [lo, hi) of the window starting at w0 whose positions lie in [0, W).
struct ColTaps {
  int64_t lo, hi;
};
ColTaps col_taps(const RowWindows& g, int64_t w0) {
  const int64_t lo = w0 >= 0 ? 0 : (-w0 + g.dilation - 1) / g.dilation;
  const int64_t hi = g.W - 1 - w0 < 0 ? 0 : std::min(g.kernel, (g.W - 1 - w0) / g.dilation + 1);
  return {lo, std::max(lo, hi)};
}

// The update rule of a max that keeps the first maximum in window order and lets a NaN win
// (the last NaN), for one element: what PoolVec::takes does per lane.
template <typename T>
bool takes_scalar(T v, T best) {
  return v > best || v != v;
}

template <typename T>
struct Best {
  T value;
  int64_t index;  // -1: the window holds no input element
};

// One window, one channel, scalar: x points at the plane's first element, pixels `pixel`
// elements apart. Borders, tails and planes too large for the vector index lanes take it.
template <typename T>
Best<T> window_scalar(const T* x, int64_t pixel, const RowWindows& g, int64_t ow) {
  const int64_t w0 = ow * g.stride - g.pad;
  const ColTaps cols = col_taps(g, w0);
  if (g.rows == 0 || cols.lo == cols.hi) return {-std::numeric_limits<T>::infinity(), -1};
  Best<T> best{-std::numeric_limits<T>::infinity(), g.first_row * g.W + w0 + cols.lo * g.dilation};
  for (int64_t r = 0; r < g.rows; ++r) {
    const int64_t row = (g.first_row + r * g.row_step) * g.W;
    for (int64_t s = cols.lo; s < cols.hi; ++s) {
      const int64_t flat = row + w0 + s * g.dilation;
      const T v = x[flat * pixel];
      if (takes_scalar(v, best.value)) best = {v, flat};
    }
  }
  return best;
}

// Whether the largest flat index of these windows fits the vector index lanes.
template <typename T>
bool fits_index_lanes(const RowWindows& g) {
  using Index = typename PoolVec<T>::Index;
  const int64_t last_row = g.first_row + (g.rows - 1) * g.row_step;
  return (last_row + 1) * g.W <= std::numeric_limits<Index>::max();
}

enum class Step { One, Two, Any };

// The stride of kStep, known at compile time for One and Two: the per-row arithmetic divides by
// it, and a division by a variable costs more than the rest of a narrow row's setup.
template <Step kStep>
int64_t stride_of(const RowWindows& g) {
  return kStep == Step::One ? 1 : kStep == Step::Two ? 2 : g.stride;
}

// Input columns a vector of outputs reads in one row: its taps, and for stride 2 the element
// after the last one (the de-interleaving load reads pairs).
template <typename T, Step kStep>
int64_t vector_span(const RowWindows& g) {
  return (PoolVec<T>::width - 1) * g.stride + (g.kernel - 1) * g.dilation + 1 +
         (kStep == Step::Two ? 1 : 0);
}

// The inputs of a vector of outputs at one tap: columns col + lane * stride of a row, by the
// contiguous (stride 1), de-interleaving (stride 2) or gathering load. With kBorder the lanes
// read -inf where a column leaves [0, W), without touching memory there.
template <typename T, Step kStep, bool kBorder>
typename PoolVec<T>::V load_tap(const T* row, int64_t col, int64_t W,
                                typename PoolVec<T>::I lanes) {
  using P = PoolVec<T>;
  if constexpr (kStep == Step::One)
    return kBorder ? P::load(row, col, W) : P::load(row + col);
  else if constexpr (kStep == Step::Two)
    return kBorder ? P::load_even(row, col, W) : P::load_even(row + col);
  else
    return kBorder ? P::gather(row, col, lanes, W) : P::gather(row + col, lanes);
}

// NCHW: folds input row r of the windows of outputs [ow, ow + width) into the running maxima
// best[] and their indices index[]. Without kBorder every tap lies inside the row; with it,
// the loads read -inf where the windows overhang the row.
template <typename T, Step kStep, bool kIndex, bool kBorder>
void nchw_vector_row(const T* plane, const RowWindows& g, int64_t r, int64_t ow, T* best_out,
                     typename PoolVec<T>::Index* index_out) {
  using P = PoolVec<T>;
  using Index = typename P::Index;
  const typename P::I lanes = P::iota(static_cast<Index>(g.stride));
  const int64_t w0 = ow * g.stride - g.pad;
  const int64_t row = (g.first_row + r * g.row_step) * g.W;
  const T* src = plane + row;
  typename P::V best = P::load(best_out);
  typename P::I best_index;
  if constexpr (kIndex) best_index = P::iload(index_out);
  for (int64_t s = 0; s < g.kernel; ++s) {
    const int64_t col = w0 + s * g.dilation;
    const typename P::V v = load_tap<T, kStep, kBorder>(src, col, g.W, lanes);
    if constexpr (kIndex) {
      const typename P::M take = P::takes(v, best);
      best = P::select(take, v, best);
      best_index =
          P::iselect(take, P::iadd(P::iset1(static_cast<Index>(row + col)), lanes), best_index);
    } else {
      best = P::max(v, best);
    }
  }
  P::store(best_out, best);
  if constexpr (kIndex) P::istore(index_out, best_index);
}

// Outputs computed per pass over the input rows: their running maxima stay in L1.
constexpr int64_t kRowChunk = 256;

// Asks for the lines of [begin, end) kRowsAhead rows below. A plane's rows are read in address
// order, but only a few at a time (P1: three rows of 448 bytes per output row), too few for the
// hardware prefetchers to run ahead, and from memory the loads stalled. On an Ice Lake Xeon,
// alternating runs: P1's NCHW forward median 1.8 -> 1.4 ms, its training step median 8.9 -> 7.2 ms.
// The address is formed as an integer and may lie past the tensor: a prefetch never faults.
constexpr int64_t kRowsAhead = 4;
template <typename T>
inline void prefetch_rows_ahead(const T* begin, const T* end, int64_t row_elems) {
  constexpr uintptr_t kLine = 64;
  const uintptr_t ahead = kRowsAhead * row_elems * sizeof(T);
  const uintptr_t first = reinterpret_cast<uintptr_t>(begin) & ~(kLine - 1);
  for (uintptr_t a = first; a < reinterpret_cast<uintptr_t>(end); a += kLine)
    __builtin_prefetch(reinterpret_cast<const void*>(a + ahead));
}

// NCHW, the windows of outputs [ow0, ow1) with ow1 - ow0 in [1, kRowChunk]: their maxima
// and, with kIndex, their indices, one slot of width lanes per vector. The input rows of the
// windows are read one after the other, each from left to right, so the plane streams
// through in order (interleaving the rows of a window defeats the hardware prefetchers). A
// row narrower than a vector (pooling 16x16 planes and smaller) takes one vector of border
// loads, its lanes past the row's end discarded.
template <typename T, Step kStep, bool kIndex>
struct ChunkWindows {
  using P = PoolVec<T>;
  using Index = typename P::Index;
  static constexpr int64_t width = P::width;
  // Vectors start every width outputs; the last one ends at n, overlapping its neighbour if
  // need be. Each keeps its running maxima and indices in its own slot (v * width): sharing
  // the overlapped outputs' memory would make its loads wait on stores they partly overlap.
  int64_t n, vectors;
  T best[kRowChunk];
  Index index[kIndex ? kRowChunk : 1];

  int64_t start_of(int64_t v) const { return std::max<int64_t>(0, std::min(v * width, n - width)); }

  ChunkWindows(const T* plane, const RowWindows& g, int64_t ow0, int64_t ow1)
      : n(ow1 - ow0), vectors((ow1 - ow0 + width - 1) / width) {
    constexpr T kLowest = -std::numeric_limits<T>::infinity();
    const int64_t stride = stride_of<kStep>(g);
    // Outputs [a, b) read only inside the row.
    const int64_t a = (g.pad + stride - 1) / stride;
    const int64_t last = g.W - vector_span<T, kStep>(g) + g.pad + (width - 1) * stride;
    const int64_t b = last >= 0 ? last / stride + 1 : 0;
    auto interior = [&](int64_t v) {
      const int64_t ow = ow0 + start_of(v);
      return ow >= a && ow + width <= b;
    };
    const typename P::I lanes = P::iota(static_cast<Index>(g.stride));
    for (int64_t v = 0; v < vectors; ++v) {
      P::store(best + v * width, P::set1(kLowest));
      if constexpr (kIndex) {
        const int64_t first = g.first_row * g.W + (ow0 + start_of(v)) * g.stride - g.pad;
        P::istore(index + v * width, P::iadd(P::iset1(static_cast<Index>(first)), lanes));
      }
    }
    // The columns the chunk's windows read, asked for kRowsAhead rows below each window row.
    const int64_t col0 = std::max<int64_t>(0, ow0 * g.stride - g.pad);
    const int64_t col1 =
        std::min(g.W, (ow1 - 1) * g.stride - g.pad + (g.kernel - 1) * g.dilation + 1);
    for (int64_t r = 0; r < g.rows; ++r) {
      const T* row = plane + (g.first_row + r * g.row_step) * g.W;
      if (g.prefetch) prefetch_rows_ahead(row + col0, row + col1, g.W);
      for (int64_t v = 0; v < vectors; ++v) {
        const int64_t ow = ow0 + start_of(v);
        Index* ip = kIndex ? index + v * width : nullptr;
        if (interior(v))
          nchw_vector_row<T, kStep, kIndex, false>(plane, g, r, ow, best + v * width, ip);
        else
          nchw_vector_row<T, kStep, kIndex, true>(plane, g, r, ow, best + v * width, ip);
      }
    }
    if constexpr (kIndex) {
      for (int64_t v = 0; v < vectors; ++v) {
        // A lane left at -inf never took a value: its index is the window's first tap inside
        // the input (or -1 for none), as the scalar rule gives.
        if (interior(v) || P::all(P::takes(P::load(best + v * width), P::set1(kLowest)))) continue;
        const int64_t j = start_of(v);
        for (int64_t l = 0; l < std::min(width, n - j); ++l)
          if (best[v * width + l] == kLowest)
            index[v * width + l] =
                static_cast<Index>(window_scalar(plane, 1, g, ow0 + j + l).index);
      }
    }
  }
};

template <typename T, Step kStep, bool kIndex>
void nchw_chunk(const T* plane, const RowWindows& g, int64_t ow0, int64_t ow1, T* y, int64_t* idx) {
  using P = PoolVec<T>;
  const ChunkWindows<T, kStep, kIndex> m(plane, g, ow0, ow1);
  if (m.n < P::width) {
    std::copy(m.best, m.best + m.n, y);
    if constexpr (kIndex) {
      int64_t narrow[P::width];
      P::store_index(narrow, P::iload(m.index));
      std::copy(narrow, narrow + m.n, idx);
    }
    return;
  }
  for (int64_t v = 0; v < m.vectors; ++v) {
    P::store(y + m.start_of(v), P::load(m.best + v * P::width));
    if constexpr (kIndex) P::store_index(idx + m.start_of(v), P::iload(m.index + v * P::width));
  }
}

// The backward of the same windows: dx[index] += dy for each of their outputs, with the
// indices as the vector lanes hold them. An output the last vector shares with its neighbour
// is added once.
template <typename T, Step kStep>
void nchw_chunk_backward(const T* plane, const RowWindows& g, int64_t ow0, int64_t ow1, const T* dy,
                         T* dx) {
  constexpr int64_t width = PoolVec<T>::width;
  const ChunkWindows<T, kStep, true> m(plane, g, ow0, ow1);
  for (int64_t v = 0; v < m.vectors; ++v) {
    const int64_t j = m.start_of(v);
    for (int64_t l = std::max<int64_t>(0, v * width - j); l < std::min(width, m.n - j); ++l) {
      const int64_t i = m.index[v * width + l];
      if (i >= 0) dx[i] += dy[j + l];
    }
  }
}

// Elements of the line the values-only NCHW path folds a chunk's window rows into (kept in
// L1 with its margin of one vector).
constexpr int64_t kLine = 2048;

// Outputs per chunk of the values-only path: the line holds their windows' columns, each
// vector load included (the last vector of a chunk overlaps its neighbour). 0 when the path
// does not apply: windows that do not overlap along the row (the row kernel then loads each
// input element once anyway, and on inputs streamed from DRAM it measured faster: P3, 2x2
// stride 2, 4.7 ms against 9-10 ms on one thread) or a line that cannot hold one vector's
// windows.
template <typename T, Step kStep>
int64_t values_chunk_outputs(const RowWindows& g) {
  const int64_t span = vector_span<T, kStep>(g);
  if ((g.kernel - 1) * g.dilation + 1 <= g.stride || span > kLine) return 0;
  return (kLine - span) / g.stride + PoolVec<T>::width;
}

// line[i] = the maximum over the window rows of input column c0 + i (NaN if any is NaN), for
// i in [0, length); -inf where the column lies outside the row, so the windows need no
// border cases. The rows are folded in one after the other, each read in address order
// (interleaving them defeats the hardware prefetchers). line has room for length + one vector.
template <typename T>
void fold_rows(const T* plane, const RowWindows& g, int64_t c0, int64_t length, T* line) {
  using P = PoolVec<T>;
  constexpr int64_t width = P::width;
  constexpr T kLowest = -std::numeric_limits<T>::infinity();
  const int64_t lo = std::clamp<int64_t>(-c0, 0, length);  // line index of input column 0
  const int64_t hi = g.rows ? std::clamp<int64_t>(g.W - c0, lo, length) : lo;
  // Vectors [lo, whole) read only inside the row; the one at whole, if any, ends past it.
  const int64_t whole = lo + (hi - lo) / width * width;
  for (int64_t r = 0; r < g.rows; ++r) {
    const T* row = plane + (g.first_row + r * g.row_step) * g.W + c0;
    auto fold = [&](int64_t i, typename P::V v) {
      P::store(line + i, r ? P::max(v, P::load(line + i)) : v);
    };
    if (g.prefetch) prefetch_rows_ahead(row + lo, row + hi, g.W);
    for (int64_t i = lo; i < whole; i += width) fold(i, P::load(row + i));
    if (whole < hi) fold(whole, P::load(row, whole, hi));  // lanes past the row read -inf
  }
  std::fill(line, line + lo, kLowest);
  const int64_t stored = whole < hi ? whole + width : hi;  // the last vector's lanes included
  if (stored < length) std::fill(line + stored, line + length, kLowest);
}

// NCHW without indices, outputs [ow0, ow1) with ow1 - ow0 in [1, values_chunk_outputs]: the
// window rows' maximum first, column by column into a line, then each window's columns
// along the line. Every input element is loaded once per window row, in address order, and
// no vector needs a border mask.
template <typename T, Step kStep>
void nchw_values_chunk(const T* plane, const RowWindows& g, int64_t ow0, int64_t ow1, T* y) {
  using P = PoolVec<T>;
  constexpr int64_t width = P::width;
  const int64_t stride = stride_of<kStep>(g);
  const int64_t n = ow1 - ow0;
  // The line starts so that input column 0 falls on a vector boundary: the fold's loads and
  // stores then never split across cache lines.
  alignas(64) T buffer[kLine + 2 * width];
  const int64_t c0 = ow0 * stride - g.pad;
  T* line = buffer + (width - std::max<int64_t>(-c0, 0) % width) % width;
  const int64_t length = (std::max(n, width) - width) * stride + vector_span<T, kStep>(g);
  fold_rows(plane, g, c0, length, line);
  const typename P::I lanes = P::iota(static_cast<typename P::Index>(stride));
  // The maxima of the windows of outputs [j, j + width).
  auto windows = [&](int64_t j) {
    auto tap = [&](int64_t s) {
      return load_tap<T, kStep, false>(line, j * stride + s * g.dilation, length, lanes);
    };
    typename P::V best = tap(0);
    for (int64_t s = 1; s < g.kernel; ++s) best = P::max(tap(s), best);
    return best;
  };
  if (n < width) {
    T narrow[width];
    P::store(narrow, windows(0));
    std::copy(narrow, narrow + n, y);
    return;
  }
  for (int64_t j = 0; j < n; j += width) {
    const int64_t at = std::min(j, n - width);
    P::store(y + at, windows(at));
  }
}

// Calls f(from, to) over chunks of [ow0, ow1) of at most `most` outputs each, of equal size
// to within one.
template <typename F>
void for_each_chunk(int64_t ow0, int64_t ow1, int64_t most, const F& f) {
  const int64_t chunks = (ow1 - ow0 + most - 1) / most;
  for (int64_t c = 0; c < chunks; ++c)
    f(ow0 + (ow1 - ow0) * c / chunks, ow0 + (ow1 - ow0) * (c + 1) / chunks);
}

template <typename T, Step kStep, bool kIndex>
void nchw_row_with(const T* plane, const RowWindows& g, int64_t ow0, int64_t ow1, T* y,
                   int64_t* idx) {
  if constexpr (!kIndex) {
    if (const int64_t most = values_chunk_outputs<T, kStep>(g); most > 0)
      return for_each_chunk(ow0, ow1, most, [&](int64_t from, int64_t to) {
        nchw_values_chunk<T, kStep>(plane, g, from, to, y + (from - ow0));
      });
  }
  const bool vectors = g.rows > 0 && fits_index_lanes<T>(g);
  if (!vectors) {
    for (int64_t ow = ow0; ow < ow1; ++ow) {
      const Best<T> m = window_scalar(plane, 1, g, ow);
      y[ow - ow0] = m.value;
      if (idx) idx[ow - ow0] = m.index;
    }
    return;
  }
  for_each_chunk(ow0, ow1, kRowChunk, [&](int64_t from, int64_t to) {
    nchw_chunk<T, kStep, kIndex>(plane, g, from, to, y + (from - ow0),
                                 kIndex ? idx + (from - ow0) : nullptr);
  });
}

// Calls f(std::integral_constant<Step, ...>) for the windows' stride.
template <typename F>
void with_step(const RowWindows& g, const F& f) {
  if (g.stride == 1)
    f(std::integral_constant<Step, Step::One>{});
  else if (g.stride == 2)
    f(std::integral_constant<Step, Step::Two>{});
  else
    f(std::integral_constant<Step, Step::Any>{});
}

template <typename T>
void nchw_row(const T* plane, const RowWindows& g, int64_t ow0, int64_t ow1, T* y, int64_t* idx) {
  with_step(g, [&](auto step) {
    constexpr Step kStep = decltype(step)::value;
    if (idx)
      nchw_row_with<T, kStep, true>(plane, g, ow0, ow1, y, idx);
    else
      nchw_row_with<T, kStep, false>(plane, g, ow0, ow1, y, idx);
  });
}

template <typename T>
void nchw_row_backward(const T* plane, const RowWindows& g, int64_t Wo, const T* dy, T* dx) {
  if (g.rows == 0 || !fits_index_lanes<T>(g)) {
    for (int64_t ow = 0; ow < Wo; ++ow)
      if (const int64_t i = window_scalar(plane, 1, g, ow).index; i >= 0) dx[i] += dy[ow];
    return;
  }
  with_step(g, [&](auto step) {
    for_each_chunk(0, Wo, kRowChunk, [&](int64_t from, int64_t to) {
      nchw_chunk_backward<T, decltype(step)::value>(plane, g, from, to, dy + from, dx);
    });
  });
}

// NHWC: the max of one window over channels [c, c + kVectors * width), in registers, with its
// index when kIndex.
template <typename T, int kVectors, bool kIndex = true>
struct ChannelBlock {
  using P = PoolVec<T>;
  typename P::V best[kVectors];
  typename P::I index[kIndex ? kVectors : 1];

  ChannelBlock(const T* image, const RowWindows& g, int64_t C, int64_t c, int64_t w0,
               ColTaps cols) {
    using Index = typename P::Index;
    for (int j = 0; j < kVectors; ++j) {
      best[j] = P::set1(-std::numeric_limits<T>::infinity());
      if constexpr (kIndex)
        index[j] = P::iset1(static_cast<Index>(g.first_row * g.W + w0 + cols.lo * g.dilation));
    }
    for (int64_t r = 0; r < g.rows; ++r) {
      const int64_t row = (g.first_row + r * g.row_step) * g.W;
      for (int64_t s = cols.lo; s < cols.hi; ++s) {
        const int64_t flat = row + w0 + s * g.dilation;
        const T* px = image + flat * C + c;
        const typename P::I here = kIndex ? P::iset1(static_cast<Index>(flat)) : typename P::I{};
        for (int j = 0; j < kVectors; ++j) {
          const typename P::V v = P::load(px + j * P::width);
          if constexpr (kIndex) {
            const typename P::M take = P::takes(v, best[j]);
            best[j] = P::select(take, v, best[j]);
            index[j] = P::iselect(take, here, index[j]);
          } else {
            best[j] = P::max(v, best[j]);
          }
        }
      }
    }
  }
};

// Calls f(c, kVectors) over channel blocks of [c0, c1) that fill whole vectors (4 at a time,
// then 1), and returns where the scalar tail starts.
template <typename T, typename F>
int64_t for_each_channel_block(int64_t c0, int64_t c1, const F& f) {
  constexpr int64_t width = PoolVec<T>::width;
  int64_t c = c0;
  for (; c + 4 * width <= c1; c += 4 * width) f(c, std::integral_constant<int, 4>{});
  for (; c + width <= c1; c += width) f(c, std::integral_constant<int, 1>{});
  return c;
}

template <typename T, bool kIndex>
void nhwc_row_with(const T* image, const RowWindows& g, int64_t C, int64_t c0, int64_t c1,
                   int64_t Wo, int64_t out_stride, T* y, int64_t* idx) {
  using P = PoolVec<T>;
  const bool vectors = g.rows > 0 && (!kIndex || fits_index_lanes<T>(g));
  for (int64_t ow = 0; ow < Wo; ++ow) {
    T* yp = y + ow * out_stride;
    int64_t* ip = kIndex ? idx + ow * out_stride : nullptr;
    const int64_t w0 = ow * g.stride - g.pad;
    const ColTaps cols = col_taps(g, w0);
    int64_t tail = c0;
    if (vectors && cols.lo < cols.hi) {
      tail = for_each_channel_block<T>(c0, c1, [&](int64_t c, auto vectors_) {
        constexpr int kVectors = decltype(vectors_)::value;
        const ChannelBlock<T, kVectors, kIndex> m(image, g, C, c, w0, cols);
        for (int j = 0; j < kVectors; ++j) {
          P::store(yp + c + j * P::width, m.best[j]);
          if constexpr (kIndex) P::store_index(ip + c + j * P::width, m.index[j]);
        }
      });
    }
    for (int64_t c = tail; c < c1; ++c) {
      const Best<T> m = window_scalar(image + c, C, g, ow);
      yp[c] = m.value;
      if constexpr (kIndex) ip[c] = m.index;
    }
  }
}

template <typename T>
void nhwc_row(const T* image, const RowWindows& g, int64_t C, int64_t c0, int64_t c1, int64_t Wo,
              int64_t out_stride, T* y, int64_t* idx) {
  if (idx)
    nhwc_row_with<T, true>(image, g, C, c0, c1, Wo, out_stride, y, idx);
  else
    nhwc_row_with<T, false>(image, g, C, c0, c1, Wo, out_stride, y, idx);
}

// kTiles: the windows tile the image, so each pixel's gradient is stored once, not added.
template <typename T, bool kTiles>
void nhwc_row_backward_with(const T* image, const RowWindows& g, int64_t C, int64_t c0, int64_t c1,
                            int64_t Wo, int64_t out_stride, const T* dy, T* dx) {
  using P = PoolVec<T>;
  using Index = typename P::Index;
  const bool vectors = g.rows > 0 && fits_index_lanes<T>(g);
  for (int64_t ow = 0; ow < Wo; ++ow) {
    const T* dyp = dy + ow * out_stride;
    const int64_t w0 = ow * g.stride - g.pad;
    const ColTaps cols = col_taps(g, w0);
    // Calls f(flat) for each tap of the window that lies inside the image.
    auto for_each_tap = [&](const auto& f) {
      for (int64_t r = 0; r < g.rows; ++r) {
        const int64_t row = (g.first_row + r * g.row_step) * g.W;
        for (int64_t s = cols.lo; s < cols.hi; ++s) f(row + w0 + s * g.dilation);
      }
    };
    int64_t tail = c0;
    if (vectors && cols.lo < cols.hi) {
      tail = for_each_channel_block<T>(c0, c1, [&](int64_t c, auto vectors_) {
        constexpr int kVectors = decltype(vectors_)::value;
        const ChannelBlock<T, kVectors> m(image, g, C, c, w0, cols);
        typename P::V grad[kVectors];
        for (int j = 0; j < kVectors; ++j) grad[j] = P::load(dyp + c + j * P::width);
        // Each tap's pixel takes the gradient in the channels whose argmax it is: no
        // scattered stores, and lanes of one vector never collide.
        for_each_tap([&](int64_t flat) {
          T* px = dx + flat * C + c;
          const typename P::I here = P::iset1(static_cast<Index>(flat));
          for (int j = 0; j < kVectors; ++j) {
            const typename P::V add = P::select(P::ieq(m.index[j], here), grad[j], P::zero());
            if constexpr (kTiles)
              P::store(px + j * P::width, add);
            else
              P::store(px + j * P::width, P::add(P::load(px + j * P::width), add));
          }
        });
      });
    }
    for (int64_t c = tail; c < c1; ++c) {
      const int64_t i = window_scalar(image + c, C, g, ow).index;
      if constexpr (kTiles)
        for_each_tap([&](int64_t flat) { dx[flat * C + c] = flat == i ? dyp[c] : T(0); });
      else if (i >= 0)
        dx[i * C + c] += dyp[c];
    }
  }
}

template <typename T>
void nhwc_row_backward(const T* image, const RowWindows& g, int64_t C, int64_t c0, int64_t c1,
                       int64_t Wo, int64_t out_stride, const T* dy, T* dx, bool tiles) {
  if (tiles)
    nhwc_row_backward_with<T, true>(image, g, C, c0, c1, Wo, out_stride, dy, dx);
  else
    nhwc_row_backward_with<T, false>(image, g, C, c0, c1, Wo, out_stride, dy, dx);
}

// 2x2 stride-2 windows without padding or dilation over NCHW planes, one output row at a
// time: x0 points at the row pair the windows cover (the second row lies W further). They
// read each input element once, so a vector of outputs needs only its two rows' de-interleaved
// columns: no per-tap loads, no border masks, no indices.

// The four taps of the windows of outputs [j, j + width), in window order (row 0's two,
// then row 1's).
template <typename T>
struct Taps2x2 {
  using P = PoolVec<T>;
  typename P::V tap[4];

  Taps2x2(const T* x0, int64_t W, int64_t j)
      : tap{P::load_even(x0 + 2 * j), P::load_odd(x0 + 2 * j), P::load_even(x0 + W + 2 * j),
            P::load_odd(x0 + W + 2 * j)} {}
};

// Calls vector(j) for vectors of outputs [j, j + width) covering [0, Wo), the last one ending
// at Wo and overlapping its neighbour if need be (its outputs are written twice, alike), or
// scalar(j) for each output of a row narrower than a vector.
template <typename T, typename V, typename S>
void for_each_2x2_vector(int64_t Wo, const V& vector, const S& scalar) {
  constexpr int64_t width = PoolVec<T>::width;
  if (Wo < width) {
    for (int64_t j = 0; j < Wo; ++j) scalar(j);
    return;
  }
  for (int64_t j = 0; j < Wo; j += width) vector(std::min(j, Wo - width));
}

// The maxima of the windows of outputs [j, j + width) and their argmax taps (0-3), by the
// forward's rule (takes()).
template <typename T>
struct Argmax2x2 {
  using P = PoolVec<T>;
  typename P::V best;
  typename P::I tap;

  explicit Argmax2x2(const Taps2x2<T>& x) : best(x.tap[0]), tap(P::iset1(0)) {
    for (int t = 1; t < 4; ++t) {
      const typename P::M take = P::takes(x.tap[t], best);
      best = P::select(take, x.tap[t], best);
      tap = P::iselect(take, P::iset1(t), tap);
    }
  }
};

// The argmax of one window's taps in window order, by the forward's rule (takes()).
template <typename T>
int argmax_2x2(const T (&x)[4]) {
  int tap = 0;
  for (int t = 1; t < 4; ++t)
    if (takes_scalar(x[t], x[tap])) tap = t;
  return tap;
}

// Window offsets (uint8 taps) to and from index lanes.
template <typename T>
typename PoolVec<T>::I load_offsets(const uint8_t* offsets) {
  typename PoolVec<T>::Index lanes[PoolVec<T>::width];
  std::copy(offsets, offsets + PoolVec<T>::width, lanes);
  return PoolVec<T>::iload(lanes);
}
template <typename T>
void store_offsets(uint8_t* offsets, typename PoolVec<T>::I taps) {
  typename PoolVec<T>::Index lanes[PoolVec<T>::width];
  PoolVec<T>::istore(lanes, taps);
  std::copy(lanes, lanes + PoolVec<T>::width, offsets);
}

// The forward, with each window's argmax tap in offsets when it is not null.
template <typename T>
void nchw_row_2x2(const T* x0, int64_t W, int64_t Wo, T* y, uint8_t* offsets) {
  using P = PoolVec<T>;
  const T* x1 = x0 + W;
  for_each_2x2_vector<T>(
      Wo,
      [&](int64_t j) {
        const Taps2x2<T> x(x0, W, j);
        if (!offsets) {
          P::store(y + j, P::max(P::max(x.tap[0], x.tap[1]), P::max(x.tap[2], x.tap[3])));
          return;
        }
        const Argmax2x2<T> m(x);
        P::store(y + j, m.best);
        store_offsets<T>(offsets + j, m.tap);
      },
      [&](int64_t j) {
        const T x[4] = {x0[2 * j], x0[2 * j + 1], x1[2 * j], x1[2 * j + 1]};
        const int tap = argmax_2x2(x);
        y[j] = x[tap];
        if (offsets) offsets[j] = static_cast<uint8_t>(tap);
      });
}

// The backward writes both rows of dx whole, columns [0, W): dy to each window's argmax, 0 to
// its other taps and to a column past the last window. No zeroing pass, no scatter. The
// argmax comes from the forward's offsets when they are given (false if one is no tap),
// else it is recomputed from x.
template <typename T>
bool nchw_row_backward_2x2(const T* x0, const uint8_t* offsets, int64_t W, int64_t Wo, const T* dy,
                           T* dx0) {
  using P = PoolVec<T>;
  using Index = typename P::Index;
  const T* x1 = x0 + W;
  T* dx1 = dx0 + W;
  if (offsets) {
    uint8_t largest = 0;
    for (int64_t j = 0; j < Wo; ++j) largest = std::max(largest, offsets[j]);
    if (largest > 3) return false;
  }
  for_each_2x2_vector<T>(
      Wo,
      [&](int64_t j) {
        const typename P::I tap =
            offsets ? load_offsets<T>(offsets + j) : Argmax2x2<T>(Taps2x2<T>(x0, W, j)).tap;
        const typename P::V g = P::load(dy + j);
        typename P::V grad[4];
        for (int t = 0; t < 4; ++t)
          grad[t] = P::select(P::ieq(tap, P::iset1(static_cast<Index>(t))), g, P::zero());
        P::store_interleaved(dx0 + 2 * j, grad[0], grad[1]);
        P::store_interleaved(dx1 + 2 * j, grad[2], grad[3]);
      },
      [&](int64_t j) {
        const int64_t c = 2 * j;
        int tap;
        if (offsets) {
          tap = offsets[j];
        } else {
          const T x[4] = {x0[c], x0[c + 1], x1[c], x1[c + 1]};
          tap = argmax_2x2(x);
        }
        T* d[4] = {dx0 + c, dx0 + c + 1, dx1 + c, dx1 + c + 1};
        for (int t = 0; t < 4; ++t) *d[t] = t == tap ? dy[j] : T(0);
      });
  for (int64_t c = 2 * Wo; c < W; ++c) dx0[c] = dx1[c] = T(0);
  return true;
}

// 3x3 stride-2 windows over NCHW planes (the ResNet stem's pool). The general kernels walk
// windows of any geometry; these unroll the three rows and columns of a window. The
// backward zeroed the plane and added each output's gradient at its argmax one element at a
// time; here it finds an output row's argmax taps a vector at a time (or reads the ones the
// forward kept), then writes each row of dx once, in order, gathering for every element the
// gradients of the windows (at most two columns of at most two output rows) whose argmax it
// is: no zeroing pass, no scattered adds.

// Output row oh's windows start at input row h0 = 2 * oh - pad_h; their rows [r0, r1) lie
// inside the input.
struct WindowRows3x3s2 {
  int64_t h0, r0, r1;
  WindowRows3x3s2(const Plane3x3s2& g, int64_t oh)
      : h0(2 * oh - g.pad_h), r0(h0 < 0 ? -h0 : 0), r1(std::min<int64_t>(3, g.H - h0)) {}
};

// Room for a row of outputs and the vector that may end past it.
template <typename T>
constexpr int64_t kRowRoom3x3s2 = kMaxRow3x3 + PoolVec<T>::width;

// The outputs of row oh: their maxima best[ow] and argmax taps tap[ow] (r * 3 + s within the
// whole window, padding included), in arrays of kRowRoom3x3s2<T>.
template <typename T>
void row_taps_3x3s2(const T* plane, const Plane3x3s2& g, int64_t oh, T* best_out,
                    typename PoolVec<T>::Index* tap_out) {
  using P = PoolVec<T>;
  using Index = typename P::Index;
  constexpr int64_t width = P::width;
  constexpr T kLowest = -std::numeric_limits<T>::infinity();
  const WindowRows3x3s2 rows(g, oh);
  const int64_t h0 = rows.h0, r0 = rows.r0, r1 = rows.r1;
  if (g.prefetch)
    for (int64_t r = r0; r < r1; ++r) {
      const T* row = plane + (h0 + r) * g.W;
      prefetch_rows_ahead(row, row + g.W, g.W);
    }
  const typename P::I lanes = P::iota(2);
  // The windows of outputs [j, j + width); c: the column of lane 0's first tap.
  auto taps = [&](int64_t j, int64_t c, auto border) {
    typename P::V best = P::set1(kLowest);
    // A window that takes no value (all -inf) keeps its first tap inside the input.
    typename P::I tap = P::iset1(static_cast<Index>(3 * r0));
    for (int64_t r = r0; r < r1; ++r) {
      const T* row = plane + (h0 + r) * g.W;
      for (int s = 0; s < 3; ++s) {
        const typename P::V v =
            load_tap<T, Step::Two, decltype(border)::value>(row, c + s, g.W, lanes);
        const typename P::M take = P::takes(v, best);
        best = P::select(take, v, best);
        tap = P::iselect(take, P::iset1(static_cast<Index>(3 * r + s)), tap);
      }
    }
    P::store(best_out + j, best);
    P::istore(tap_out + j, tap);
  };
  for (int64_t j = 0; j < g.Wo; j += width) {
    const int64_t c = 2 * j - g.pad_w;
    // A de-interleaving load reads 2 * width elements from its tap's column.
    if (c >= 0 && c + 2 + 2 * width <= g.W)
      taps(j, c, std::false_type{});
    else
      taps(j, c, std::true_type{});
  }
  // Output 0's window starts at column -1 with padding: its first tap inside is s = 1.
  if (g.pad_w > 0 && best_out[0] == kLowest) tap_out[0] = static_cast<Index>(3 * r0 + 1);
}

// Forward of output row oh with its window offsets (the argmax taps as uint8).
template <typename T>
void nchw_row_3x3s2(const T* plane, const Plane3x3s2& g, int64_t oh, T* y, uint8_t* offsets) {
  T best[kRowRoom3x3s2<T>];
  typename PoolVec<T>::Index tap[kRowRoom3x3s2<T>];
  row_taps_3x3s2(plane, g, oh, best, tap);
  std::copy(best, best + g.Wo, y);
  std::copy(tap, tap + g.Wo, offsets);
}

// An output row's argmax taps and gradient, padded past the row with a tap that matches none
// and a zero gradient: the gather's last vector starts at most one output past the row and
// also reads the next one's.
template <typename T>
struct TapRow {
  using Index = typename PoolVec<T>::Index;
  static constexpr int64_t kPad = PoolVec<T>::width + 1;
  Index tap[kMaxRow3x3 + kPad];
  T dy[kMaxRow3x3 + kPad];
};

// The taps of output row oh: recomputed from the plane, or read from the forward's offsets
// (then checked: false for an offset that is no tap inside the input).
template <typename T>
bool fill_tap_row(const T* plane, const uint8_t* offsets, const Plane3x3s2& g, int64_t oh,
                  const T* dy, TapRow<T>& out) {
  using Index = typename PoolVec<T>::Index;
  bool valid = true;
  if (offsets) {
    // Rows [r0, r1) and, at the row's two ends, columns of the window lie inside the input.
    const WindowRows3x3s2 rows(g, oh);
    const int t0 = static_cast<int>(3 * rows.r0), t1 = static_cast<int>(3 * rows.r1);
    int bad = 0;
    for (int64_t ow = 0; ow < g.Wo; ++ow) {
      const int t = offsets[ow];
      bad |= (t >= t1) | (t < t0);
      out.tap[ow] = static_cast<Index>(t);
    }
    const int64_t last = g.Wo - 1;
    valid = !bad && !(g.pad_w > 0 && offsets[0] % 3 == 0) &&
            2 * last - g.pad_w + offsets[last] % 3 < g.W;
  } else {
    T best[kRowRoom3x3s2<T>];
    row_taps_3x3s2(plane, g, oh, best, out.tap);
  }
  std::copy(dy, dy + g.Wo, out.dy);
  std::fill(out.tap + g.Wo, out.tap + g.Wo + TapRow<T>::kPad, Index{-1});
  std::fill(out.dy + g.Wo, out.dy + g.Wo + TapRow<T>::kPad, T(0));
  return valid;
}

// Row ih of dx from its sources: the output rows whose windows cover it, each with the
// window row r that ih is in them. line: room for 2 * kMaxRow3x3 + 2 * kPad elements.
template <typename T>
void gradient_row_3x3s2(const TapRow<T>* const* rows, const int64_t* r, int sources,
                        const Plane3x3s2& g, T* line, T* dx) {
  using P = PoolVec<T>;
  using Index = typename P::Index;
  constexpr int64_t width = P::width;
  if (sources == 0) {
    std::fill(dx, dx + g.W, T(0));
    return;
  }
  // line[2 * ow + s] takes tap s of window ow: input column 2 * ow + s - pad_w. Even entries
  // past 0 take tap 2 of one window and tap 0 of the next, odd ones tap 1. The sums run in
  // the order of the windows (rows, then columns), as torch's and the general backward's.
  auto gathered = [&](const TapRow<T>& row, int64_t j, Index tap) {
    return P::select(P::ieq(P::iload(row.tap + j), P::iset1(tap)), P::load(row.dy + j), P::zero());
  };
  line[0] = 0;
  for (int i = 0; i < sources; ++i)
    if (rows[i]->tap[0] == 3 * r[i]) line[0] += rows[i]->dy[0];
  for (int64_t j = 0; 2 * j + 1 < g.W + g.pad_w; j += width) {
    typename P::V odd = P::zero(), even = P::zero();
    for (int i = 0; i < sources; ++i) {
      const Index t = static_cast<Index>(3 * r[i]);
      odd = P::add(odd, gathered(*rows[i], j, t + 1));
      even = P::add(P::add(even, gathered(*rows[i], j, t + 2)), gathered(*rows[i], j + 1, t));
    }
    P::store_interleaved(line + 2 * j + 1, odd, even);
  }
  std::copy(line + g.pad_w, line + g.pad_w + g.W, dx);
}

template <typename T>
bool nchw_plane_backward_3x3s2(const T* x, const uint8_t* offsets, const Plane3x3s2& g, const T* dy,
                               int64_t dy_row, T* dx) {
  TapRow<T> rows[2];  // output rows oh - 1 and oh at rows[(oh - 1) % 2] and rows[oh % 2]
  T line[2 * kMaxRow3x3 + 2 * TapRow<T>::kPad];
  bool valid = true;
  int64_t ready = 0;  // output rows [0, ready) have their taps
  for (int64_t ih = 0; ih < g.H; ++ih) {
    // Window row r of output row oh is input row 2 * oh - pad_h + r.
    const TapRow<T>* sources[2];
    int64_t r[2];
    int count = 0;
    const int64_t top = ih + g.pad_h;
    for (int64_t oh = top / 2 - (top % 2 ? 0 : 1); oh <= top / 2; ++oh) {
      if (oh < 0 || oh >= g.Ho) continue;
      for (; ready <= oh; ++ready)
        valid &= fill_tap_row(x, offsets ? offsets + ready * dy_row : nullptr, g, ready,
                              dy + ready * dy_row, rows[ready % 2]);
      sources[count] = &rows[oh % 2];
      r[count++] = top - 2 * oh;
    }
    gradient_row_3x3s2(sources, r, count, g, line, dx + ih * g.W);
  }
  return valid;
}

template <typename T>
MaxPoolKernels<T> max_pool2d_kernels_for() {
  return {&nchw_row<T>,       &nchw_row_backward<T>,
          &nhwc_row<T>,       &nhwc_row_backward<T>,
          &nchw_row_2x2<T>,   &nchw_row_backward_2x2<T>,
          &nchw_row_3x3s2<T>, &nchw_plane_backward_3x3s2<T>};
}

}  // namespace
}  // namespace fastcnn::cpu
