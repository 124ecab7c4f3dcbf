// fastcnn._C's CUDA entry points, *_cuda beside the CPU ones: the same arguments, with the
// stream (torch.cuda.current_stream(device).cuda_stream) instead of a thread count. The
// kernels validate every view (device, dtype, shape, layout) before launching.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "bindings_args.h"

namespace fastcnn::bindings {

namespace {
void* stream_ptr(std::uintptr_t stream) {
  return reinterpret_cast<void*>(stream);
}
}  // namespace

void register_cuda(py::module_& m) {
  m.def(
      "conv2d_workspace_cuda",
      [](const std::string& pass, py::object input, py::object weight, py::object output,
         Pair stride, Pair pad_begin, Pair pad_end, Pair dilation, int64_t groups) {
        const char* op = "conv2d_workspace_cuda";
        return cuda::conv2d_workspace_bytes(
            conv_pass(pass), view(input, op, "input"), view(weight, op, "weight"),
            view(output, op, "output"),
            conv_params(op, stride, pad_begin, pad_end, dilation, groups, false));
      },
      py::arg("pass_"), py::arg("input"), py::arg("weight"), py::arg("output"), py::arg("stride"),
      py::arg("pad_begin"), py::arg("pad_end"), py::arg("dilation"), py::arg("groups"));

  m.def(
      "conv2d_forward_cuda",
      [](py::object input, py::object weight, py::object bias, py::object output, Pair stride,
         Pair pad_begin, Pair pad_end, Pair dilation, int64_t groups, bool relu, bool allow_tf32,
         std::uintptr_t stream) {
        const char* op = "conv2d";
        const TensorView x = view(input, op, "input"), w = view(weight, op, "weight"),
                         y = view(output, op, "output");
        const auto b = optional_view(bias, op, "bias");
        const Conv2dParams p = conv_params(op, stride, pad_begin, pad_end, dilation, groups, relu);
        py::gil_scoped_release nogil;
        cuda::conv2d_forward(x, w, ptr(b), y, p, allow_tf32, stream_ptr(stream));
      },
      py::arg("input"), py::arg("weight"), py::arg("bias"), py::arg("output"), py::arg("stride"),
      py::arg("pad_begin"), py::arg("pad_end"), py::arg("dilation"), py::arg("groups"),
      py::arg("relu"), py::arg("allow_tf32"), py::arg("stream"));

  m.def(
      "conv2d_backward_input_cuda",
      [](py::object grad_output, py::object weight, py::object grad_input, Pair stride,
         Pair pad_begin, Pair pad_end, Pair dilation, int64_t groups, bool allow_tf32,
         std::uintptr_t stream) {
        const char* op = "conv2d_backward_input";
        const TensorView dy = view(grad_output, op, "grad_output"), w = view(weight, op, "weight"),
                         dx = view(grad_input, op, "grad_input");
        const Conv2dParams p = conv_params(op, stride, pad_begin, pad_end, dilation, groups, false);
        py::gil_scoped_release nogil;
        cuda::conv2d_backward_input(dy, w, dx, p, allow_tf32, stream_ptr(stream));
      },
      py::arg("grad_output"), py::arg("weight"), py::arg("grad_input"), py::arg("stride"),
      py::arg("pad_begin"), py::arg("pad_end"), py::arg("dilation"), py::arg("groups"),
      py::arg("allow_tf32"), py::arg("stream"));

  m.def(
      "conv2d_backward_weight_cuda",
      [](py::object grad_output, py::object input, py::object grad_weight, Pair stride,
         Pair pad_begin, Pair pad_end, Pair dilation, int64_t groups, py::object workspace,
         bool allow_tf32, std::uintptr_t stream) {
        const char* op = "conv2d_backward_weight";
        const TensorView dy = view(grad_output, op, "grad_output"), x = view(input, op, "input"),
                         dw = view(grad_weight, op, "grad_weight");
        const auto ws = optional_view(workspace, op, "workspace");
        const Conv2dParams p = conv_params(op, stride, pad_begin, pad_end, dilation, groups, false);
        py::gil_scoped_release nogil;
        cuda::conv2d_backward_weight(dy, x, dw, p, ptr(ws), allow_tf32, stream_ptr(stream));
      },
      py::arg("grad_output"), py::arg("input"), py::arg("grad_weight"), py::arg("stride"),
      py::arg("pad_begin"), py::arg("pad_end"), py::arg("dilation"), py::arg("groups"),
      py::arg("workspace"), py::arg("allow_tf32"), py::arg("stream"));

  m.def(
      "conv2d_backward_bias_cuda",
      [](py::object grad_output, py::object grad_bias, std::uintptr_t stream) {
        const char* op = "conv2d_backward_bias";
        const TensorView dy = view(grad_output, op, "grad_output"),
                         db = view(grad_bias, op, "grad_bias");
        py::gil_scoped_release nogil;
        cuda::conv2d_backward_bias(dy, db, stream_ptr(stream));
      },
      py::arg("grad_output"), py::arg("grad_bias"), py::arg("stream"));

  m.def(
      "max_pool2d_forward_cuda",
      [](py::object input, py::object output, py::object saved, Pair kernel, Pair stride,
         Pair padding, Pair dilation, bool ceil_mode, std::uintptr_t stream) {
        const char* op = "max_pool2d";
        const TensorView x = view(input, op, "input"), y = view(output, op, "output");
        const auto s = optional_view(saved, op, "indices");
        const Pool2dParams p = pool_params(op, kernel, stride, padding, dilation, ceil_mode);
        py::gil_scoped_release nogil;
        cuda::max_pool2d_forward(x, y, ptr(s), p, stream_ptr(stream));
      },
      py::arg("input"), py::arg("output"), py::arg("saved"), py::arg("kernel_size"),
      py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("ceil_mode"),
      py::arg("stream"));

  m.def(
      "max_pool2d_backward_cuda",
      [](py::object grad_output, py::object input, py::object saved, py::object grad_input,
         Pair kernel, Pair stride, Pair padding, Pair dilation, bool ceil_mode, bool deterministic,
         std::uintptr_t stream) {
        const char* op = "max_pool2d_backward";
        const TensorView dy = view(grad_output, op, "grad_output"), x = view(input, op, "input"),
                         dx = view(grad_input, op, "grad_input");
        const auto s = optional_view(saved, op, "indices");
        const Pool2dParams p = pool_params(op, kernel, stride, padding, dilation, ceil_mode);
        py::gil_scoped_release nogil;
        cuda::max_pool2d_backward(dy, x, ptr(s), dx, p, deterministic, stream_ptr(stream));
      },
      py::arg("grad_output"), py::arg("input"), py::arg("saved"), py::arg("grad_input"),
      py::arg("kernel_size"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
      py::arg("ceil_mode"), py::arg("deterministic"), py::arg("stream"));

  m.def(
      "global_avg_pool2d_forward_cuda",
      [](py::object input, py::object output, std::uintptr_t stream) {
        const char* op = "global_avg_pool2d";
        const TensorView x = view(input, op, "input"), y = view(output, op, "output");
        py::gil_scoped_release nogil;
        cuda::global_avg_pool2d_forward(x, y, stream_ptr(stream));
      },
      py::arg("input"), py::arg("output"), py::arg("stream"));

  m.def(
      "global_avg_pool2d_backward_cuda",
      [](py::object grad_output, py::object grad_input, std::uintptr_t stream) {
        const char* op = "global_avg_pool2d_backward";
        const TensorView dy = view(grad_output, op, "grad_output"),
                         dx = view(grad_input, op, "grad_input");
        py::gil_scoped_release nogil;
        cuda::global_avg_pool2d_backward(dy, dx, stream_ptr(stream));
      },
      py::arg("grad_output"), py::arg("grad_input"), py::arg("stream"));

  m.def(
      "relu_forward_cuda",
      [](py::object input, py::object output, std::uintptr_t stream) {
        const char* op = "relu";
        const TensorView x = view(input, op, "input"), y = view(output, op, "output");
        py::gil_scoped_release nogil;
        cuda::relu_forward(x, y, stream_ptr(stream));
      },
      py::arg("input"), py::arg("output"), py::arg("stream"));

  m.def(
      "relu_backward_cuda",
      [](py::object grad_output, py::object output, py::object grad_input, bool guided,
         std::uintptr_t stream) {
        const char* op = guided ? "guided_relu_backward" : "relu_backward";
        const TensorView dy = view(grad_output, op, "grad_output"), y = view(output, op, "output"),
                         dx = view(grad_input, op, "grad_input");
        py::gil_scoped_release nogil;
        cuda::relu_backward(dy, y, dx, guided, stream_ptr(stream));
      },
      py::arg("grad_output"), py::arg("output"), py::arg("grad_input"), py::arg("guided"),
      py::arg("stream"));
}

}  // namespace fastcnn::bindings
