// The Winograd driver: blocking plan, the choice of when to use it, and the parallel loop.
#include "cpu/conv2d_winograd.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "cpu/microkernel.h"
#include "cpu/parallel.h"
#include "fastcnn/ops.h"

namespace fastcnn::cpu {
namespace {

std::atomic<ConvAlgorithm> g_algorithm{ConvAlgorithm::Auto};

// The transforms built for the same ISA as the micro-kernel in use.
const WinogradTransforms& transforms() {
  static const WinogradTransforms chosen = [] {
#if defined(FASTCNN_X86)
    if (std::strcmp(isa(), "avx512") == 0) return winograd_transforms_avx512();
    if (std::strcmp(isa(), "avx2") == 0) return winograd_transforms_avx2();
#endif
    return winograd_transforms_generic();
  }();
  return chosen;
}

constexpr int64_t kL2Bytes = 1 << 20;
// Transformed input of one block (36 floats per tile and channel) kept well inside L2, next
// to the filter chunk and the block's products.
constexpr int64_t kBlockBytes = kL2Bytes / 3;
// When the transformed filters do not stay in L2 between blocks, a block has at least this
// many tiles, so each filter element fetched serves enough multiply-adds.
constexpr int64_t kMinTilesStreamingU = 32;

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
  return shape && g.C >= 8 && g.K >= 8;
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
  pl.panels = std::max<int64_t>(1, std::min(panels, ceil_div(pl.tiles, pl.mr)));
  pl.block = pl.panels * pl.mr;
  pl.blocks = ceil_div(pl.tiles, pl.block);
  // Few blocks that do not divide evenly among threads: split the filter chunks too.
  if (pl.blocks == 1 || (pl.blocks % threads != 0 && pl.blocks < 4 * threads))
    pl.ksplits = std::min<int64_t>(pl.kchunks, threads);
  pl.tasks = pl.blocks * pl.ksplits;
  pl.threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, pl.tasks)));
  pl.shared_u = pl.blocks > 1;
  pl.u_elems = round_up(pl.shared_u ? u_floats : 36 * g.C * pl.nr, 16);
  pl.v_elems = round_up(36 * pl.block * g.C, 16);
  pl.m_stride = round_up(pl.mr * pl.nr, 16) + 16;
  pl.m_elems = 36 * pl.m_stride;
  pl.wt_elems = round_up(9 * g.C * pl.nr, 16);
  return pl;
}

void winograd_forward(const WinogradPlan& pl, const float* x, const float* w, const float* bias,
                      float* y, bool relu, float* workspace) {
  const WinogradTransforms& tf = transforms();
  const MicroKernel<float>& mk = microkernel<float>();
  const int64_t C = pl.g.C, mr = pl.mr, nr = pl.nr;
  const int64_t chunk_elems = C * nr;  // one chunk's filters at one xi
  float* const shared = workspace;
  const int64_t shared_stride = pl.kchunks * chunk_elems;
  float* const scratch = workspace + (pl.shared_u ? pl.u_elems : 0);  // per-thread buffers
  if (pl.shared_u)
    parallel_for(pl.kchunks, pl.threads, [&](int tid, int64_t begin, int64_t end) {
      float* wt = scratch + tid * pl.thread_elems() + pl.v_elems + pl.m_elems;
      for (int64_t kc = begin; kc < end; ++kc)
        tf.weights(pl, w, kc, wt, shared + kc * chunk_elems, shared_stride);
    });
  parallel_for(pl.tasks, pl.threads, [&](int tid, int64_t begin, int64_t end) {
    float* v = scratch + tid * pl.thread_elems();
    float* m = v + pl.v_elems;
    float* wt = m + pl.m_elems;
    float* own = wt + pl.wt_elems;
    int64_t transformed = -1;  // the block whose input v holds
    for (int64_t task = begin; task < end; ++task) {
      const int64_t blk = task / pl.ksplits, split = task % pl.ksplits;
      const int64_t tile0 = blk * pl.block;
      if (blk != transformed) tf.input(pl, x, tile0, v), transformed = blk;
      const int64_t kc0 = split * pl.kchunks / pl.ksplits;
      const int64_t kc1 = (split + 1) * pl.kchunks / pl.ksplits;
      for (int64_t kc = kc0; kc < kc1; ++kc) {
        const float* u = shared + kc * chunk_elems;
        int64_t u_stride = shared_stride;
        if (!pl.shared_u)
          tf.weights(pl, w, kc, wt, own, chunk_elems), u = own, u_stride = chunk_elems;
        // Panel by panel: its 36 products stay in L1 for the output transform.
        for (int64_t p = 0; p < pl.panels && tile0 + p * mr < pl.tiles; ++p) {
          for (int64_t xi = 0; xi < 36; ++xi)
            mk.run(C, v + (xi * pl.panels + p) * C * mr, u + xi * u_stride, m + xi * pl.m_stride);
          tf.output(pl, m, tile0 + p * mr, kc, bias, relu, y);
        }
      }
    }
  });
}

}  // namespace fastcnn::cpu
