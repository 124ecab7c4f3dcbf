// NCHW -> NHWC copies, for the kernels that read channels innermost (the NCHW weight gradient
// of 3x3 layers with rows 12 or more wide runs on NHWC copies of its operands: conv2d.py).
// Blocks of 8 channels x 8 positions move through 8x8 transposes; each task writes whole
// pixels.
#include <algorithm>
#include <cstdint>

#include "cpu/checks.h"
#include "cpu/parallel.h"
#include "cpu/transpose_8x8.h"
#include "fastcnn/ops.h"

namespace fastcnn::cpu {
namespace {

// A task's positions: their pixels take about this much, so that they stay in L2 while each
// run of 8 channel planes streams past them in long, prefetchable reads.
constexpr int64_t kTaskBytes = 256 << 10;

template <typename T>
void run(const TensorView& input, const TensorView& output, int threads) {
  const int64_t N = input.sizes[0], C = input.sizes[1], P = input.sizes[2] * input.sizes[3];
  const int64_t span = std::max<int64_t>(64, kTaskBytes / (C * sizeof(T)) / 8 * 8);
  const int64_t blocks = ceil_div(P, span);
  const T* x = input.ptr<T>();
  T* y = output.ptr<T>();
  parallel_for(
      N * blocks, threads_for(N * P * C, 1 << 15, threads), [&](int, int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          // Positions [p0, p1) of image n: planes (channel stride P) into pixels.
          const int64_t n = t / blocks, p0 = t % blocks * span, p1 = std::min(P, p0 + span);
          transpose_into(x + n * C * P + p0, P, C, p1 - p0, y + (n * P + p0) * C, C, 1);
        }
      });
}

}  // namespace

void nchw_to_nhwc(const TensorView& input, const TensorView& output, int threads) {
  const char* op = "nchw_to_nhwc";
  check_cpu_float(op, "input", input);
  check_cpu_float(op, "output", output);
  check_threads(op, threads);
  check_same_dtype(op, "output", output, input);
  check_dense_layout(op, "input", input, false);
  check_dense_layout(op, "output", output, true);
  check_sizes(op, "output", output,
              {input.sizes[0], input.sizes[1], input.sizes[2], input.sizes[3]});
  if (input.numel() == 0) return;
  if (input.dtype == DType::Float64)
    run<double>(input, output, threads);
  else
    run<float>(input, output, threads);
}

}  // namespace fastcnn::cpu
