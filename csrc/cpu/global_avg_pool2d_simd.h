// The global-average-pooling sums, written once over PoolVec<T> (the including translation
// unit defines it for its ISA first: cpu/{generic,avx2,avx512}/pool_vec.h) and compiled per
// ISA, with internal linkage like cpu/max_pool2d_simd.h.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu/global_avg_pool2d_kernels.h"

namespace fastcnn::cpu {
namespace {

// Runs of up to this many vectors per lane are added in T before each add to the double
// accumulators: widening costs more than adding, and the rounding of 4 float32 terms is
// small next to what double accumulation saves over a long plane.
constexpr int kRun = 4;

template <typename T>
void sum_planes(const T* x, int64_t planes, int64_t hw, double scale, T* y) {
  using P = PoolVec<T>;
  for (int64_t p = 0; p < planes; ++p) {
    const T* plane = x + p * hw;
    typename P::Acc acc = P::acc_zero();
    int64_t i = 0;
    while (i + P::width <= hw) {
      typename P::V run = P::load(plane + i);
      i += P::width;
      for (int k = 1; k < kRun && i + P::width <= hw; ++k, i += P::width)
        run = P::add(run, P::load(plane + i));
      acc = P::acc_add(acc, run);
    }
    double sum = P::acc_sum(acc);
    for (; i < hw; ++i) sum += plane[i];
    y[p] = static_cast<T>(sum * scale);
  }
}

// Channels [c, c + kVectors * width) of one image, summed in registers over its pixels.
template <typename T, int kVectors>
void sum_channel_block(const T* x, int64_t hw, int64_t C, int64_t c, double scale, T* y) {
  using P = PoolVec<T>;
  typename P::Acc acc[kVectors];
  for (int j = 0; j < kVectors; ++j) acc[j] = P::acc_zero();
  for (int64_t i0 = 0; i0 < hw; i0 += kRun) {
    typename P::V run[kVectors];
    for (int j = 0; j < kVectors; ++j) run[j] = P::load(x + i0 * C + c + j * P::width);
    for (int64_t i = i0 + 1; i < std::min(hw, i0 + kRun); ++i)
      for (int j = 0; j < kVectors; ++j)
        run[j] = P::add(run[j], P::load(x + i * C + c + j * P::width));
    for (int j = 0; j < kVectors; ++j) acc[j] = P::acc_add(acc[j], run[j]);
  }
  double sums[kVectors * P::width];
  for (int j = 0; j < kVectors; ++j) P::acc_store(sums + j * P::width, acc[j]);
  for (int j = 0; j < kVectors * P::width; ++j) y[c + j] = static_cast<T>(sums[j] * scale);
}

template <typename T>
void sum_pixels(const T* x, int64_t hw, int64_t C, int64_t c0, int64_t c1, double scale, T* y) {
  constexpr int64_t width = PoolVec<T>::width;
  int64_t c = c0;
  for (; c + 4 * width <= c1; c += 4 * width) sum_channel_block<T, 4>(x, hw, C, c, scale, y);
  for (; c + width <= c1; c += width) sum_channel_block<T, 1>(x, hw, C, c, scale, y);
  for (; c < c1; ++c) {
    double sum = 0;
    for (int64_t i = 0; i < hw; ++i) sum += x[i * C + c];
    y[c] = static_cast<T>(sum * scale);
  }
}

template <typename T>
GapKernels<T> global_avg_pool2d_kernels_for() {
  return {&sum_planes<T>, &sum_pixels<T>};
}

}  // namespace
}  // namespace fastcnn::cpu
