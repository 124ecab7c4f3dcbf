// The CPU entry points. Each validates its arguments (sizes, dtypes, layouts, workspace)
// and throws fastcnn::ValueError / TypeError before touching memory.
//
// Tensors are 4-D views in NCHW order of sizes, laid out densely either as NCHW
// (contiguous) or NHWC (channels_last); outputs are allocated by the caller.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fastcnn/tensor.h"

namespace fastcnn {

struct Conv2dParams {
  int64_t stride[2] = {1, 1};
  int64_t pad_begin[2] = {0, 0};  // top, left
  int64_t pad_end[2] = {0, 0};    // bottom, right (only shapes the output size)
  int64_t dilation[2] = {1, 1};
  int64_t groups = 1;
  bool relu = false;  // fused epilogue: out = max(conv + bias, 0)
};

struct Pool2dParams {
  int64_t kernel[2] = {1, 1};
  int64_t stride[2] = {1, 1};
  int64_t padding[2] = {0, 0};
  int64_t dilation[2] = {1, 1};
  bool ceil_mode = false;
};

// Output sizes, the single definition shared with the Python shape functions' tests.
int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad_total,
                      int64_t dilation);
int64_t pool_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation,
                      bool ceil_mode);

namespace cpu {

// Asks the kernel to back the whole 2 MiB pages of [address, address + nbytes) with
// transparent huge pages when they are first touched. For a large fresh output this turns one
// page fault per 4 KiB into one per 2 MiB. Returns whether the advice was taken (false off
// Linux, without transparent huge pages, or for a block holding no whole huge page).
bool advise_huge_pages(std::uintptr_t address, size_t nbytes);

enum class ConvPass { Forward, BackwardInput, BackwardWeight };

// Forward algorithm for float32 convolutions: Auto takes Winograd where it measured faster
// (F(4x4, 3x3) for 3x3 stride-1 layers, F(5, 4) along the rows of stride-2 stems), Direct
// always takes the direct path. Process-wide.
enum class ConvAlgorithm { Auto, Direct };
void set_conv_algorithm(ConvAlgorithm algorithm);
ConvAlgorithm conv_algorithm();

// Workspace bytes a conv pass needs for these shapes with `threads` threads.
size_t conv2d_workspace_bytes(ConvPass pass, const TensorView& input, const TensorView& weight,
                              const TensorView& output, const Conv2dParams& p, int threads);

void conv2d_forward(const TensorView& input, const TensorView& weight, const TensorView* bias,
                    const TensorView& output, const Conv2dParams& p, void* workspace,
                    size_t workspace_bytes, int threads);
void conv2d_backward_input(const TensorView& grad_output, const TensorView& weight,
                           const TensorView& grad_input, const Conv2dParams& p, void* workspace,
                           size_t workspace_bytes, int threads);
void conv2d_backward_weight(const TensorView& grad_output, const TensorView& input,
                            const TensorView& grad_weight, const Conv2dParams& p, void* workspace,
                            size_t workspace_bytes, int threads);
void conv2d_backward_bias(const TensorView& grad_output, const TensorView& grad_bias, int threads);

// indices may be null: the backward then recomputes the argmax. int64: flat h*W+w per plane.
// uint8: window offsets (the argmax tap r*kw+s of each window), kept only for NCHW planes with
// 2x2 stride-2 windows that tile them or 3x3 stride-2 windows with at most
// kMaxPoolOffsetsRow outputs a row; their backward reads them instead of the input.
constexpr int64_t kMaxPoolOffsetsRow = 512;
void max_pool2d_forward(const TensorView& input, const TensorView& output,
                        const TensorView* indices, const Pool2dParams& p, int threads);
void max_pool2d_backward(const TensorView& grad_output, const TensorView& input,
                         const TensorView* indices, const TensorView& grad_input,
                         const Pool2dParams& p, int threads);

// output / grad_output are [N, C] views.
void global_avg_pool2d_forward(const TensorView& input, const TensorView& output, int threads);
void global_avg_pool2d_backward(const TensorView& grad_output, const TensorView& grad_input,
                                int threads);

// Element-wise over dense tensors of any layout (all views share sizes and strides).
void relu_forward(const TensorView& input, const TensorView& output, int threads);
// guided: grad_input = max(relu_backward, 0), i.e. grad * (grad > 0) * (output > 0).
void relu_backward(const TensorView& grad_output, const TensorView& output,
                   const TensorView& grad_input, bool guided, int threads);

// input: dense NCHW, output: dense NHWC of the same sizes and dtype.
void nchw_to_nhwc(const TensorView& input, const TensorView& output, int threads);

const char* isa();  // the micro-kernel ISA chosen at load: "avx512", "avx2" or "generic"

}  // namespace cpu

namespace cuda {
struct DeviceInfo {
  char name[256];
  int major;
  int minor;
  size_t total_memory;
  int multiprocessors;
};
// Number of visible devices; 0 without a driver or device. Never throws.
int device_count();
bool device_info(int index, DeviceInfo* out);
int runtime_version();
int driver_version();

// The CUDA entry points: the same names, checks and semantics as the CPU ones, for
// float32, float16 and bfloat16 tensors on one CUDA device (float64 is rejected). Each
// launches on `stream` (a cudaStream_t: torch's current stream) under a device guard,
// never synchronizes, and throws CudaError (a std::runtime_error naming the op) when a
// launch fails. Built only with FASTCNN_WITH_CUDA.
void relu_forward(const TensorView& input, const TensorView& output, void* stream);
void relu_backward(const TensorView& grad_output, const TensorView& output,
                   const TensorView& grad_input, bool guided, void* stream);

void global_avg_pool2d_forward(const TensorView& input, const TensorView& output, void* stream);
void global_avg_pool2d_backward(const TensorView& grad_output, const TensorView& grad_input,
                                void* stream);

// `saved` (may be null) is what the backward reads to find each window's argmax: int64
// indices (flat h * W + w per plane, torch's convention, -1 for a window without input) or
// compact window offsets r * kw + s (uint8 for windows of fewer than 256 taps, else int32;
// kh * kw for a window without input). Null: the backward recomputes the argmax.
// deterministic: the backward gathers in a fixed order instead of scattering with atomics.
void max_pool2d_forward(const TensorView& input, const TensorView& output, const TensorView* saved,
                        const Pool2dParams& p, void* stream);
void max_pool2d_backward(const TensorView& grad_output, const TensorView& input,
                         const TensorView* saved, const TensorView& grad_input,
                         const Pool2dParams& p, bool deterministic, void* stream);

// allow_tf32: float32 may use TF32 tensor cores (float16 / bfloat16 always use tensor
// cores on sm_80+, accumulating in float32). Only backward-weight takes a workspace (a
// CUDA uint8 tensor of conv2d_workspace_bytes); the others need none.
size_t conv2d_workspace_bytes(cpu::ConvPass pass, const TensorView& input, const TensorView& weight,
                              const TensorView& output, const Conv2dParams& p);
void conv2d_forward(const TensorView& input, const TensorView& weight, const TensorView* bias,
                    const TensorView& output, const Conv2dParams& p, bool allow_tf32, void* stream);
void conv2d_backward_input(const TensorView& grad_output, const TensorView& weight,
                           const TensorView& grad_input, const Conv2dParams& p, bool allow_tf32,
                           void* stream);
void conv2d_backward_weight(const TensorView& grad_output, const TensorView& input,
                            const TensorView& grad_weight, const Conv2dParams& p,
                            const TensorView* workspace, bool allow_tf32, void* stream);
void conv2d_backward_bias(const TensorView& grad_output, const TensorView& grad_bias, void* stream);
}  // namespace cuda

}  // namespace fastcnn
