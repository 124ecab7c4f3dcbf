// Argument conversions shared by the CPU and CUDA bindings: DLPack capsules to views, and
// Python tuples to the kernels' parameter structs.
#pragma once

#include <pybind11/pybind11.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>

#include "dlpack_view.h"
#include "fastcnn/error.h"
#include "fastcnn/ops.h"

namespace fastcnn::bindings {

namespace py = pybind11;
using Pair = std::array<int64_t, 2>;

inline TensorView view(const py::handle& obj, const char* op, const char* name) {
  return view_from_dlpack(obj.ptr(), op, name);
}

inline std::optional<TensorView> optional_view(const py::object& obj, const char* op,
                                               const char* name) {
  if (obj.is_none()) return std::nullopt;
  return view(obj, op, name);
}

inline const TensorView* ptr(const std::optional<TensorView>& v) {
  return v ? &*v : nullptr;
}

// Geometry values past 32 bits describe no real layer, and would let the kernels' size
// arithmetic (e.g. dilation * (kernel - 1)) overflow int64; the kernels check the lower bounds.
inline Pair geometry(const char* op, const char* name, Pair v) {
  constexpr int64_t kMax = INT32_MAX;
  FASTCNN_CHECK(v[0] <= kMax && v[1] <= kMax, op, ": ", name, " must be at most ", kMax, ", got (",
                v[0], ", ", v[1], ")");
  return v;
}

// The output-size formulas divide by the stride and multiply dilation by the kernel: the
// kernels validate these first, and the size queries exposed on their own do so here.
inline void check_out_size_args(const char* op, int64_t size, int64_t kernel, int64_t stride,
                                int64_t padding, int64_t dilation) {
  FASTCNN_CHECK(size >= 0 && size <= INT64_MAX / 4, op, ": size must be in [0, 2^61], got ", size);
  for (const auto& [name, v, low] :
       {std::tuple{"kernel", kernel, 1}, std::tuple{"stride", stride, 1},
        std::tuple{"padding", padding, 0}, std::tuple{"dilation", dilation, 1}})
    FASTCNN_CHECK(v >= low && v <= INT32_MAX, op, ": ", name, " must be in [", low, ", ", INT32_MAX,
                  "], got ", v);
}

inline Conv2dParams conv_params(const char* op, Pair stride, Pair pad_begin, Pair pad_end,
                                Pair dilation, int64_t groups, bool relu) {
  stride = geometry(op, "stride", stride);
  pad_begin = geometry(op, "pad_begin", pad_begin);
  pad_end = geometry(op, "pad_end", pad_end);
  dilation = geometry(op, "dilation", dilation);
  Conv2dParams p;
  for (int i = 0; i < 2; ++i) {
    p.stride[i] = stride[i];
    p.pad_begin[i] = pad_begin[i];
    p.pad_end[i] = pad_end[i];
    p.dilation[i] = dilation[i];
  }
  p.groups = groups;
  p.relu = relu;
  return p;
}

inline Pool2dParams pool_params(const char* op, Pair kernel, Pair stride, Pair padding,
                                Pair dilation, bool ceil_mode) {
  kernel = geometry(op, "kernel_size", kernel);
  stride = geometry(op, "stride", stride);
  padding = geometry(op, "padding", padding);
  dilation = geometry(op, "dilation", dilation);
  Pool2dParams p;
  for (int i = 0; i < 2; ++i) {
    p.kernel[i] = kernel[i];
    p.stride[i] = stride[i];
    p.padding[i] = padding[i];
    p.dilation[i] = dilation[i];
  }
  p.ceil_mode = ceil_mode;
  return p;
}

inline cpu::ConvPass conv_pass(const std::string& name) {
  if (name == "forward") return cpu::ConvPass::Forward;
  if (name == "backward_input") return cpu::ConvPass::BackwardInput;
  if (name == "backward_weight") return cpu::ConvPass::BackwardWeight;
  throw ValueError(
      "conv2d_workspace: pass must be 'forward', 'backward_input' or 'backward_weight', got '" +
      name + "'");
}

// Registers the *_cuda entry points (bindings_cuda.cpp; only with FASTCNN_WITH_CUDA).
void register_cuda(py::module_& m);

}  // namespace fastcnn::bindings
