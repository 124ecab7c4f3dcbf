// The Winograd weight gradient's driver: when it applies, its blocking, and the parallel loop.
#include "cpu/conv2d_winograd_backward_weight.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include "cpu/conv2d_backward_weight_nhwc.h"
#include "cpu/flush_denormals.h"
#include "cpu/isa_select.h"
#include "cpu/parallel.h"
#include "fastcnn/ops.h"

namespace fastcnn::cpu {
namespace {

// The transforms built for the same ISA as the outer-product kernel in use.
const WinogradWeightTransforms& transforms() {
  static const WinogradWeightTransforms chosen = FASTCNN_FOR_CHOSEN_ISA(winograd_weight_transforms);
  return chosen;
}

// Each block adds 2 * tiles multiply-adds into every sum it reads and writes back once per
// point (36 * K * C sums; C9's 37.7 MB): below this many tiles per block the sums' traffic,
// not the multiplies, sets the time.
constexpr int64_t kMinTiles = 128;
// A block's transformed tiles (36 floats per tile and channel or filter), so that the GEMMs
// read the points' rows back from L2 right after the threads wrote them. Blocks of 16 MB,
// read back from L3 or memory, took up to twice as long: inside a training step, whose other
// traffic evicts the workspace between calls, on every layer measured.
constexpr int64_t kBlockBytes = 1 << 20;

// The sums' per-point stride off multiples of 4 KB (one L1 set for a channel's 36 loads).
int64_t point_stride(int64_t elems) {
  const int64_t s = round_up(elems, 16);
  return s % 1024 == 0 ? s + 16 : s;
}

// Below this largest magnitude of X or of dY, flushing denormals to zero could move the
// weight gradient by more than its rounding does: such calls sum directly.
constexpr float kMinMagnitude = 0x1p-40f;

// Tiles per group, and at most this many groups per block (a GEMM's runs, on the stack).
constexpr int64_t kGroupTiles = 32;
constexpr int64_t kMaxGroups = 64;

// A point's rows in a group an odd number of cache lines long: a tile's transform stores its
// 36 rows one point apart, which then fall in different L1 sets.
int64_t odd_lines(int64_t elems) {
  const int64_t s = round_up(elems, 16);
  return s / 16 % 2 == 0 ? s + 16 : s;
}

}  // namespace

bool winograd_backward_weight_applies(const ConvGeom& g, bool float32) {
  if (conv_algorithm() == ConvAlgorithm::Direct || !float32) return false;
  const bool shape =
      g.R == 3 && g.S == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && g.G == 1;
  const int64_t tiles = g.N * ceil_div(g.Ho, 4) * ceil_div(g.Wo, 4);
  // The outer-product kernel is also the fallback for Inf and NaN (see the header).
  return shape && g.C >= 8 && g.K >= 8 && tiles >= kMinTiles &&
         outer_backward_weight_applies(g, sizeof(float));
}

WinogradWeightPlan winograd_weight_plan(const ConvGeom& g, int threads) {
  WinogradWeightPlan pl;
  pl.g = g;
  pl.tiles_h = ceil_div(g.Ho, 4), pl.tiles_w = ceil_div(g.Wo, 4);
  pl.tiles = g.N * pl.tiles_h * pl.tiles_w;
  const int64_t tile_bytes = 36 * (g.C + g.K) * int64_t{sizeof(float)};
  const int64_t block = std::min(std::max(kBlockBytes / tile_bytes, kMinTiles), pl.tiles);
  pl.blocks = ceil_div(pl.tiles, block);
  pl.block = ceil_div(pl.tiles, pl.blocks);  // blocks of (nearly) equal size
  pl.width = outer_kernels().width_f32;
  // Tasks (point, slice of channel panels) that divide evenly among the threads.
  const int64_t panels = ceil_div(g.C, pl.width);
  pl.parts = std::min<int64_t>(panels, threads / std::gcd<int64_t>(36, threads));
  pl.threads = static_cast<int>(std::min<int64_t>(threads, 36 * pl.parts));
  pl.group = std::max(kGroupTiles, ceil_div(pl.block, kMaxGroups));
  pl.groups = ceil_div(pl.block, pl.group);
  pl.v_point = odd_lines(pl.group * g.C);
  pl.z_point = odd_lines(pl.group * g.K);
  pl.v_elems = pl.groups * 36 * pl.v_point;
  pl.z_elems = pl.groups * 36 * pl.z_point;
  pl.s_stride = point_stride(round_up(g.C, pl.width) * g.K);
  return pl;
}

bool winograd_backward_weight(const WinogradWeightPlan& pl, const float* dy, const float* x,
                              float* dw, float* workspace) {
  const ConvGeom& g = pl.g;
  const WinogradWeightTransforms& tf = transforms();
  const OuterGemm<float> gemm = outer_kernels().f32;
  float* const v = workspace;
  float* const z = v + pl.v_elems;
  float* const s = z + pl.z_elems;
  const int64_t panels = ceil_div(g.C, pl.width);
  std::vector<WinogradWeightScan> scans(pl.threads);
  for (int64_t b = 0; b < pl.blocks; ++b) {
    const int64_t t0 = b * pl.block, t1 = std::min(pl.tiles, t0 + pl.block);
    parallel_for(t1 - t0, pl.threads, [&](int thread, int64_t begin, int64_t end) {
      const FlushDenormals flush;
      scans[thread].add(tf.tiles(pl, dy, x, t0, t0 + begin, t0 + end, v, z));
    });
    for (const WinogradWeightScan& seen : scans)
      if (!seen.finite) return false;
    parallel_for(36 * pl.parts, pl.threads, [&](int, int64_t begin, int64_t end) {
      const FlushDenormals flush;
      OuterRun<float> runs[kMaxGroups];
      for (int64_t task = begin; task < end; ++task) {
        const int64_t xi = task / pl.parts, part = task % pl.parts;
        const int64_t i0 = part * panels / pl.parts * pl.width,
                      i1 = std::min(g.C, (part + 1) * panels / pl.parts * pl.width);
        float* sums = s + xi * pl.s_stride + i0 * g.K;  // whole panels from i0
        if (b == 0) std::fill(sums, sums + (round_up(i1, pl.width) - i0) * g.K, 0.f);
        const int64_t groups = ceil_div(t1 - t0, pl.group);
        for (int64_t q = 0; q < groups; ++q)
          runs[q] = {v + (q * 36 + xi) * pl.v_point + i0, z + (q * 36 + xi) * pl.z_point,
                     std::min(pl.group, t1 - t0 - q * pl.group)};
        gemm(i1 - i0, g.K, runs, groups, g.C, g.K, sums, g.K);
      }
    });
  }
  WinogradWeightScan all;
  for (const WinogradWeightScan& seen : scans) all.add(seen);
  if (all.x_max < kMinMagnitude || all.dy_max < kMinMagnitude) return false;
  parallel_for(panels, pl.threads, [&](int, int64_t begin, int64_t end) {
    const FlushDenormals flush;
    tf.weights(pl, s, begin * pl.width, std::min(g.C, end * pl.width), dw);
  });
  return true;
}

}  // namespace fastcnn::cpu
