// The Winograd driver: blocking plan, the choice of when to use it, and the parallel loop.
#include "cpu/conv2d_winograd.h"

#include <algorithm>
#include <atomic>

#include "cpu/isa_select.h"
#include "cpu/microkernel.h"
#include "cpu/parallel.h"
#include "cpu/prefetch.h"
#include "fastcnn/ops.h"

namespace fastcnn::cpu {
namespace {

std::atomic<ConvAlgorithm> g_algorithm{ConvAlgorithm::Auto};

// The transforms built for the same ISA as the micro-kernel in use.
const WinogradTransforms& transforms() {
  static const WinogradTransforms chosen = FASTCNN_FOR_CHOSEN_ISA(winograd_transforms);
  return chosen;
}

constexpr int64_t kL2Bytes = 1 << 20;
// Transformed input of one block (36 floats per tile and channel) kept well inside L2, next
// to the filter chunk and the block's products.
constexpr int64_t kBlockBytes = kL2Bytes / 3;
// When the transformed filters do not stay in L2 between blocks, a block has at least this
// many tiles, so each filter element fetched serves enough multiply-adds.
constexpr int64_t kMinTilesStreamingU = 32;
// Larger transformed filters are not written out whole: one block takes every tile (when its
// transformed input stays this small) and each thread transforms its own filter chunks a
// channel block at a time, in L2 (measured 1.4x faster on C7, whose filters take 9.4 MB
// transformed).
constexpr int64_t kOwnFiltersAboveBytes = 4 * kL2Bytes;
constexpr int64_t kOneBlockMaxBytes = 8 * kL2Bytes;
// A thread's own transformed filters of one channel block (36 values per channel and filter):
// C9's 512 channels in three blocks, C7's 256 in two.
constexpr int64_t kOwnBlockBytes = kL2Bytes;
// In that mode each micro-kernel call reads a panel of the shared V (4 KB for C7) from the
// L3, and its first loads stalled while the prefetchers took up the new page: the first
// floats of the next call's panel are asked for into L2 during the call (C7 1.04-1.05x,
// C9 1.01-1.04x; 256 floats measured alike, the whole panel lost 5 % on C9).
constexpr int64_t kNextPanelFloats = 128;

}  // namespace

void set_conv_algorithm(ConvAlgorithm algorithm) {
  g_algorithm.store(algorithm);
}

ConvAlgorithm conv_algorithm() {
  return g_algorithm.load();
}

bool winograd_applies(const ConvGeom& g, bool float32) {
  if (conv_algorithm() == ConvAlgorithm::Direct || !float32) return false;
  const bool shape =
      g.R == 3 && g.S == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && g.G == 1;
  // Measured (bench/NOTES.md): Winograd beats direct from 8 channels and 8 filters on; with 4
  // the micro-kernel's short reductions lose to direct.
  return shape && g.C >= 8 && g.K >= 8 && microkernel<float>().mr <= kWinogradMaxPanelRows;
}

WinogradPlan winograd_plan(const ConvGeom& g, int threads) {
  WinogradPlan pl;
  pl.g = g;
  const MicroKernel<float>& mk = microkernel<float>();
  pl.mr = mk.mr, pl.nr = mk.nr;
  pl.tiles_h = ceil_div(g.Ho, 4), pl.tiles_w = ceil_div(g.Wo, 4);
  pl.tiles = g.N * pl.tiles_h * pl.tiles_w;
  pl.kchunks = ceil_div(g.K, pl.nr);
  const int64_t u_floats = 36 * g.C * pl.kchunks * pl.nr;
  int64_t panels = std::max<int64_t>(1, kBlockBytes / (36 * g.C * pl.mr * 4));
  if (u_floats * 4 > kL2Bytes) panels = std::max(panels, ceil_div(kMinTilesStreamingU, pl.mr));
  if (u_floats * 4 > kOwnFiltersAboveBytes && 36 * g.C * pl.tiles * 4 <= kOneBlockMaxBytes)
    panels = ceil_div(pl.tiles, pl.mr);
  pl.panels = std::max<int64_t>(1, std::min(panels, ceil_div(pl.tiles, pl.mr)));
  pl.block = pl.panels * pl.mr;
  pl.blocks = ceil_div(pl.tiles, pl.block);
  // Blocks that do not divide evenly among threads: split the filter chunks too, so the
  // threads' shares differ by one (block, chunk range) task, not by a whole block. Consecutive
  // tasks share a block, so only the blocks at a share's edges are transformed twice.
  if (pl.blocks % threads != 0) pl.ksplits = std::min<int64_t>(pl.kchunks, threads);
  pl.tasks = pl.blocks * pl.ksplits;
  pl.threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, pl.tasks)));
  pl.shared_u = pl.blocks > 1;
  pl.shared_v = pl.blocks == 1 && pl.threads > 1;
  // Channel blocks of equal size (whole stages), each at most kOwnBlockBytes transformed.
  const int64_t max_channels =
      std::max<int64_t>(kWinogradStageChannels, kOwnBlockBytes / (36 * pl.nr * 4));
  const int64_t channel_blocks = ceil_div(g.C, max_channels);
  pl.own_channels = std::min(g.C, round_up(ceil_div(g.C, channel_blocks), kWinogradStageChannels));
  pl.u_elems = round_up(pl.shared_u ? u_floats : 36 * pl.own_xi_stride(), 16);
  pl.v_elems = round_up(36 * pl.block * g.C, 16);
  pl.m_stride = round_up(pl.mr * pl.nr, 16) + 16;
  pl.m_elems = 36 * (pl.shared_u ? 1 : pl.panels) * pl.m_stride;
  pl.stage_elems = round_up(9 * kWinogradStageChannels * pl.nr, 16);
  return pl;
}

namespace {

// Shared transformed filters: panel by panel, so a panel's 36 products stay in L1 for the
// output transform.
void multiply_shared(const WinogradPlan& pl, const float* v, const float* u, int64_t u_stride,
                     int64_t tile0, int64_t kc, float* m, const float* bias, bool relu, float* y) {
  const MicroKernel<float>& mk = microkernel<float>();
  const WinogradTransforms& tf = transforms();
  for (int64_t p = 0; p < pl.panels && tile0 + p * pl.mr < pl.tiles; ++p) {
    for (int64_t xi = 0; xi < 36; ++xi)
      mk.run(pl.g.C, v + (xi * pl.panels + p) * pl.g.C * pl.mr, u + xi * u_stride,
             m + xi * pl.m_stride);
    tf.output(pl, m, pl.m_stride, tile0 + p * pl.mr, kc, bias, relu, y);
  }
}

// Own transformed filters, a block of channels at a time: each block's filters serve every
// panel from L2, the products adding up over the blocks.
void multiply_own(const WinogradPlan& pl, const float* v, const float* w, float* stage, float* own,
                  int64_t tile0, int64_t kc, float* m, const float* bias, bool relu, float* y) {
  const MicroKernel<float>& mk = microkernel<float>();
  const WinogradTransforms& tf = transforms();
  const int64_t C = pl.g.C, u_stride = pl.own_xi_stride(), m_xi_stride = pl.panels * pl.m_stride;
  Epilogue<float> add;
  add.accumulate = true;
  for (int64_t c0 = 0; c0 < C; c0 += pl.own_channels) {
    const int64_t c1 = std::min(C, c0 + pl.own_channels);
    tf.weights(pl, w, kc, c0, c1, own, u_stride, stage);
    for (int64_t xi = 0; xi < 36; ++xi)
      for (int64_t p = 0; p < pl.panels; ++p) {
        const float* a = v + (xi * pl.panels + p) * C * pl.mr + c0 * pl.mr;
        float* mt = m + xi * m_xi_stride + p * pl.m_stride;
        for (int64_t i = 0; i < kNextPanelFloats; i += 16) prefetch_at<2>(a, C * pl.mr + i);
        if (c0 == 0)
          mk.run(c1 - c0, a, own + xi * u_stride, mt);
        else
          mk.run_store(c1 - c0, a, own + xi * u_stride, mt, pl.nr, pl.mr, pl.nr, add);
      }
  }
  for (int64_t p = 0; p < pl.panels && tile0 + p * pl.mr < pl.tiles; ++p)
    tf.output(pl, m + p * pl.m_stride, m_xi_stride, tile0 + p * pl.mr, kc, bias, relu, y);
}

}  // namespace

void winograd_forward(const WinogradPlan& pl, const float* x, const float* w, const float* bias,
                      float* y, bool relu, float* workspace) {
  const WinogradTransforms& tf = transforms();
  const int64_t chunk_elems = pl.g.C * pl.nr;  // one chunk's filters at one xi
  float* const shared = workspace;
  const int64_t shared_stride = pl.kchunks * chunk_elems;
  float* const v_shared = workspace + (pl.shared_u ? pl.u_elems : 0);
  float* const scratch = workspace + pl.shared_elems();  // per-thread buffers
  auto buffers = [&](int tid) {
    struct {
      float *v, *m, *stage, *own;
    } b;
    float* const mine = scratch + tid * pl.thread_elems();  // this thread's buffers
    b.v = pl.shared_v ? v_shared : mine;
    b.m = pl.shared_v ? mine : mine + pl.v_elems;
    b.stage = b.m + pl.m_elems;
    b.own = b.stage + pl.stage_elems;
    return b;
  };
  if (pl.shared_u)
    parallel_for(pl.kchunks, pl.threads, [&](int tid, int64_t begin, int64_t end) {
      float* stage = buffers(tid).stage;
      for (int64_t kc = begin; kc < end; ++kc)
        tf.weights(pl, w, kc, 0, pl.g.C, shared + kc * chunk_elems, shared_stride, stage);
    });
  if (pl.shared_v)
    parallel_for(pl.panels, pl.threads, [&](int, int64_t begin, int64_t end) {
      tf.input(pl, x, 0, begin, end, v_shared);
    });
  parallel_for(pl.tasks, pl.threads, [&](int tid, int64_t begin, int64_t end) {
    const auto b = buffers(tid);
    int64_t transformed = pl.shared_v ? 0 : -1;  // the block whose input v holds
    for (int64_t task = begin; task < end; ++task) {
      const int64_t blk = task / pl.ksplits, split = task % pl.ksplits;
      const int64_t tile0 = blk * pl.block;
      if (blk != transformed) tf.input(pl, x, tile0, 0, pl.panels, b.v), transformed = blk;
      const int64_t kc0 = split * pl.kchunks / pl.ksplits;
      const int64_t kc1 = (split + 1) * pl.kchunks / pl.ksplits;
      for (int64_t kc = kc0; kc < kc1; ++kc) {
        if (pl.shared_u) {
          multiply_shared(pl, b.v, shared + kc * chunk_elems, shared_stride, tile0, kc, b.m, bias,
                          relu, y);
        } else {
          multiply_own(pl, b.v, w, b.stage, b.own, tile0, kc, b.m, bias, relu, y);
        }
      }
    }
  });
}

}  // namespace fastcnn::cpu
