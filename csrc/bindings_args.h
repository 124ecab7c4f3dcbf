// Argument conversions shared by the CPU and CUDA bindings: DLPack capsules to views, and
// Python tuples to the kernels' parameter structs.
#pragma once

#include <pybind11/pybind11.h>

#include <array>
#include <optional>
#include <string>

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

inline Conv2dParams conv_params(Pair stride, Pair pad_begin, Pair pad_end, Pair dilation,
                                int64_t groups, bool relu) {
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

inline Pool2dParams pool_params(Pair kernel, Pair stride, Pair padding, Pair dilation,
                                bool ceil_mode) {
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
