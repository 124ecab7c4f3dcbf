// Winograd F(4x4, 3x3) forward convolution for float32, 3x3, stride 1, dilation 1, groups 1.
//
// Each 4x4 output tile is computed from a 6x6 input tile (overlap 2) as
//   Y = A^T [ sum_c (G g_kc G^T) .* (B^T d_c B) ] A,
// 36 multiplies per 16 outputs per channel pair instead of 144. The 36 element-wise products
// summed over channels are 36 independent GEMMs, run by the register-blocked micro-kernel:
//   M[xi][tile][k] = sum_c V[xi][tile][c] * U[xi][c][k]
// with tiles as the micro-kernel's rows (packed a: V) and filters as its columns (packed b: U).
// Work units are blocks of tiles whose transformed input stays in L2 while every filter chunk
// passes over it; the output transform adds the bias, applies the ReLU and stores.
#pragma once

#include <cstdint>

#include "cpu/conv2d_geom.h"

namespace fastcnn::cpu {

// The input transform stages one panel (the micro-kernel's mr tiles) at a time, up to this many.
constexpr int kWinogradMaxPanelRows = 16;
// The filter transform repacks this many channels of a filter chunk at a time.
constexpr int64_t kWinogradStageChannels = 16;

// Layout of one call: the geometry plus the blocking, computed identically for sizing and running.
struct WinogradPlan {
  ConvGeom g;
  int mr = 0, nr = 0;  // micro-kernel rows (tiles) and columns (filters)
  int64_t tiles_h = 0, tiles_w = 0, tiles = 0;
  int64_t kchunks = 0;  // filters in chunks of nr (the last padded with zero filters)
  int64_t panels = 0;   // row panels (mr tiles each) per block
  int64_t block = 0;    // tiles per block = panels * mr
  int64_t blocks = 0, ksplits = 1, tasks = 0;
  int threads = 1;
  // Shared: all filters are transformed once up front, for every block to use. Otherwise (a
  // single block: few tiles) each thread transforms the chunks it multiplies, own_channels
  // channels at a time, into its own buffer that stays in L2, and the products add up over
  // those channel blocks.
  bool shared_u = true;
  // A single block split over threads by filter chunks: its input is transformed once, each
  // thread taking a share of the panels, into one buffer that all threads read.
  bool shared_v = false;
  int64_t own_channels = 0;
  int64_t own_xi_stride() const { return own_channels * nr + 16; }
  int64_t m_stride = 0;  // mr * nr padded, so the 36 products of a tile map to distinct L1 sets
  int64_t u_elems = 0, v_elems = 0, m_elems = 0, stage_elems = 0;  // 16-float multiples
  int64_t shared_elems() const { return (shared_u ? u_elems : 0) + (shared_v ? v_elems : 0); }
  int64_t thread_elems() const {
    return (shared_v ? 0 : v_elems) + m_elems + stage_elems + (shared_u ? 0 : u_elems);
  }
  int64_t total_elems() const { return shared_elems() + threads * thread_elems(); }
};

// The transforms, written once (conv2d_winograd_impl.h) and compiled per ISA.
struct WinogradTransforms {
  // Channels [c0, c1) of filter chunk kchunk transformed, zero past the last filter:
  // u[xi * xi_stride + (c - c0) * nr + j]. stage: stage_elems floats of scratch.
  void (*weights)(const WinogradPlan& pl, const float* w, int64_t kchunk, int64_t c0, int64_t c1,
                  float* u, int64_t xi_stride, float* stage);
  // Panels [p0, p1) of V[xi][panel][c][mr] of the block starting at tile0; tiles past the
  // last are zero.
  void (*input)(const WinogradPlan& pl, const float* x, int64_t tile0, int64_t p0, int64_t p1,
                float* v);
  // One panel (mr tiles from tile0) of filter chunk kchunk, from its products
  // M[xi * xi_stride + tile * nr + j]: y = A^T M A (+ bias, ReLU).
  void (*output)(const WinogradPlan& pl, const float* m, int64_t xi_stride, int64_t tile0,
                 int64_t kchunk, const float* bias, bool relu, float* y);
};

WinogradTransforms winograd_transforms_generic();
#if defined(FASTCNN_X86)
WinogradTransforms winograd_transforms_avx2();
WinogradTransforms winograd_transforms_avx512();
#endif

// True when the forward pass of this float32 convolution takes the Winograd path: the shape
// qualifies, it is one where Winograd measured faster, and the algorithm is not forced direct.
bool winograd_applies(const ConvGeom& g, bool float32);
WinogradPlan winograd_plan(const ConvGeom& g, int threads);
void winograd_forward(const WinogradPlan& pl, const float* x, const float* w, const float* bias,
                      float* y, bool relu, float* workspace);

}  // namespace fastcnn::cpu
