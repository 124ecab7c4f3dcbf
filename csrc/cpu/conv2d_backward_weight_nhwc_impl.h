// The channels-innermost backward-weight kernel, written once and compiled per ISA: outer
// products of one position's run of filters (or channels) as vectors of `Bytes` bytes with
// its run of channels (or filters) broadcast one at a time, accumulated over the positions in
// MV x NB vector registers, read in place with no packing.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <utility>

#include "cpu/conv2d_backward_weight_nhwc.h"
#include "cpu/prefetch.h"

namespace fastcnn::cpu {
namespace {

// Positions ahead whose operands are prefetched. Rows 4 KB apart (C12: 1024 channels) all map
// to one L1 set and defeat the hardware prefetchers, which follow runs within a page.
constexpr int64_t kPrefetchAhead = 8;

// c[j * ldc + i] += sum over positions of a[i0 + i] * b[j0 + j], for i < MV * lanes and j < NB,
// the positions given by `runs`.
template <typename T, int Bytes, int MV, int NB>
void outer_tile(const OuterRun<T>* __restrict runs, int64_t nruns, int64_t a_step, int64_t b_step,
                int64_t i0, int64_t j0, T* __restrict c, int64_t ldc) {
  typedef T V __attribute__((vector_size(Bytes)));
  constexpr int lanes = Bytes / sizeof(T);
  constexpr int per_line = Bytes >= 64 ? 1 : 64 / Bytes;  // vectors per cache line
  V acc[MV][NB];
#pragma GCC unroll 16
  for (int v = 0; v < MV; ++v)
#pragma GCC unroll 16
    for (int j = 0; j < NB; ++j) acc[v][j] = V{};
  for (int64_t t = 0; t < nruns; ++t) {
    const T* a = runs[t].a + i0;
    const T* b = runs[t].b + j0;
    for (int64_t p = 0; p < runs[t].len; ++p, a += a_step, b += b_step) {
#pragma GCC unroll 16
      for (int v = 0; v < MV; v += per_line) prefetch_at(a, kPrefetchAhead * a_step + v * lanes);
      prefetch_at(b, kPrefetchAhead * b_step);
      V av[MV];
#pragma GCC unroll 16
      for (int v = 0; v < MV; ++v) std::memcpy(&av[v], a + v * lanes, Bytes);
#pragma GCC unroll 16
      for (int j = 0; j < NB; ++j) {
        const V bj = b[j] - V{};  // a splat: x - 0 is x exactly, where 0 + x is not (-0)
#pragma GCC unroll 16
        for (int v = 0; v < MV; ++v) acc[v][j] += av[v] * bj;
      }
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < NB; ++j)
#pragma GCC unroll 16
    for (int v = 0; v < MV; ++v) {
      T* dst = c + j * ldc + v * lanes;
      V sum;
      std::memcpy(&sum, dst, Bytes);
      sum += acc[v][j];
      std::memcpy(dst, &sum, Bytes);
    }
}

template <typename T>
using OuterTile = void (*)(const OuterRun<T>*, int64_t, int64_t, int64_t, int64_t, int64_t, T*,
                           int64_t);

// Every tile shape up to MV x NB, so that tails cost only what they hold.
template <typename T, int Bytes, int MV, int NB, size_t... I>
constexpr std::array<OuterTile<T>, MV * NB> outer_tiles(std::index_sequence<I...>) {
  return {&outer_tile<T, Bytes, static_cast<int>(I / NB) + 1, static_cast<int>(I % NB) + 1>...};
}

// Positions per pass of a panel's tiles: the panel's vector operand over them (MV vectors a
// position) stays in L1 while each tile of the panel reads it (C12 with AVX2: 1.45x; C10,
// C12 with AVX-512: 1.05-1.12x). Panels of fewer tiles (the stems' 21 merged taps) pass over
// all positions at once: in chunks they took 1.02-1.04x as long.
constexpr int64_t kOuterL1Bytes = 16 << 10;
constexpr int kOuterChunkTiles = 4;

template <typename T, int Bytes, int MV, int NB>
void outer_gemm(int64_t m, int64_t n, const OuterRun<T>* runs, int64_t nruns, int64_t a_step,
                int64_t b_step, T* c, int64_t ldn) {
  constexpr int lanes = Bytes / sizeof(T), width = MV * lanes;
  constexpr int64_t chunk = kOuterL1Bytes / (MV * Bytes);
  static constexpr std::array<OuterTile<T>, MV * NB> tiles =
      outer_tiles<T, Bytes, MV, NB>(std::make_index_sequence<MV * NB>{});
  // Elements past the last whole vector go one at a time, as 1-lane vectors.
  static constexpr std::array<OuterTile<T>, NB> singles =
      outer_tiles<T, sizeof(T), 1, NB>(std::make_index_sequence<NB>{});
  // Every tile of the panel at i (mv vectors wide) over the positions of runs rs[0, nrs).
  auto panel = [&](int64_t i, int64_t mv, const OuterRun<T>* rs, int64_t nrs) {
    for (int64_t j = 0; j < n; j += NB) {
      const int64_t nb = std::min<int64_t>(NB, n - j);
      T* tile = c + outer_at(i, j, ldn, width);
      if (mv > 0)
        tiles[(mv - 1) * NB + nb - 1](rs, nrs, a_step, b_step, i, j, tile, width);
      else
        singles[nb - 1](rs, nrs, a_step, b_step, i, j, tile, width);
    }
  };
  const bool chunked = n >= kOuterChunkTiles * NB;
  OuterRun<T> part[kOuterMaxRows];
  for (int64_t i = 0; i < m;) {
    const int64_t mv = std::min<int64_t>(MV, (m - i) / lanes);
    if (!chunked) panel(i, mv, runs, nruns);
    for (int64_t t = 0, p = 0; chunked && t < nruns;) {
      int64_t nparts = 0;
      for (int64_t left = chunk; t < nruns && left > 0;) {
        const int64_t take = std::min(left, runs[t].len - p);
        part[nparts++] = {runs[t].a + p * a_step, runs[t].b + p * b_step, take};
        left -= take, p += take;
        if (p == runs[t].len) ++t, p = 0;
      }
      panel(i, mv, part, nparts);
    }
    i += mv > 0 ? mv * lanes : 1;
  }
}

// MV * NB accumulators plus MV + 1 operands fit the register file (32 vector registers with
// AVX-512, 16 otherwise).
template <int Bytes, int MV, int NB>
OuterKernels make_outer_kernels() {
  return {&outer_gemm<float, Bytes, MV, NB>, &outer_gemm<double, Bytes, MV, NB>, MV * Bytes / 4,
          MV * Bytes / 8};
}

}  // namespace
}  // namespace fastcnn::cpu
