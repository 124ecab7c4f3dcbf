// Argument checks of the CUDA entry points: the same rules and messages as the CPU ones
// (cpu/checks.h, reused for layouts and shapes), with the device and dtype rules of CUDA.
#pragma once

#include <array>
#include <cstdint>

#include "cpu/checks.h"
#include "fastcnn/tensor.h"

namespace fastcnn::cuda {

using cpu::check_contiguous;
using cpu::check_ndim;
using cpu::check_same_dtype;
using cpu::check_sizes;
using cpu::dense_strides_4d;
using cpu::is_channels_last;

// On the CUDA device `device`, float32, float16 or bfloat16 (float64 is rejected with a
// message that says so), sizes non-negative, pointer non-null and aligned when non-empty.
void check_cuda_float(const char* op, const char* name, const TensorView& t, int device);
// The same for any dtype (indices, window offsets, workspace).
void check_cuda_tensor(const char* op, const char* name, const TensorView& t, int device);
// The device every other tensor of a call must share: the first tensor's, which must be CUDA.
int cuda_device_of(const char* op, const char* name, const TensorView& t);
void check_workspace(const char* op, const TensorView* workspace, size_t needed, int device);

}  // namespace fastcnn::cuda
