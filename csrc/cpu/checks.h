// Argument checks shared by the CPU entry points. Each throws fastcnn::ValueError or
// fastcnn::TypeError with a message "op: name must be ..., got ...".
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>

#include "fastcnn/error.h"
#include "fastcnn/tensor.h"

namespace fastcnn::cpu {

// CPU, float32 or float64, pointer non-null and aligned when non-empty.
void check_cpu_float(const char* op, const char* name, const TensorView& t);
// CPU, sizes non-negative, pointer non-null and aligned when non-empty (any dtype).
void check_cpu(const char* op, const char* name, const TensorView& t);
void check_ndim(const char* op, const char* name, const TensorView& t, int ndim);
// 4-D, densely laid out as NCHW or NHWC (strides of size-1 dims are free). Returns the
// layout's canonical strides, which the kernels use instead of the free ones.
std::array<int64_t, 4> dense_strides_4d(const char* op, const char* name, const TensorView& t);
// 4-D and densely laid out as NHWC (channels_last) or as NCHW (not), exactly that one.
void check_dense_layout(const char* op, const char* name, const TensorView& t, bool channels_last);
// 1-D or 2-D (row-major) and contiguous.
void check_contiguous(const char* op, const char* name, const TensorView& t);
void check_same_dtype(const char* op, const char* name, const TensorView& t, const TensorView& ref);
void check_sizes(const char* op, const char* name, const TensorView& t,
                 std::initializer_list<int64_t> expected);
void check_threads(const char* op, int threads);
void check_workspace(const char* op, const void* workspace, size_t bytes, size_t needed);

// For a dense 4-D view: true when its channels are innermost (NHWC).
bool is_channels_last(const TensorView& t);

}  // namespace fastcnn::cpu
