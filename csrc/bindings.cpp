// fastcnn._C: thin wrappers that read DLPack capsules into views, release the GIL and call
// the kernels. Every entry point validates again here (sizes, dtypes, layouts, workspace),
// so a direct call with bad arguments raises instead of reading out of bounds.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "bindings_args.h"
#include "fastcnn/error.h"
#include "fastcnn/ops.h"

namespace py = pybind11;
using fastcnn::Conv2dParams;
using fastcnn::Pool2dParams;
using fastcnn::TensorView;
using fastcnn::bindings::check_out_size_args;
using fastcnn::bindings::conv_params;
using fastcnn::bindings::conv_pass;
using fastcnn::bindings::optional_view;
using fastcnn::bindings::Pair;
using fastcnn::bindings::pool_params;
using fastcnn::bindings::ptr;
using fastcnn::bindings::view;

namespace {

struct Workspace {
  void* data;
  size_t bytes;
  py::object owner;  // the capsule a provider returned: alive until the kernel is done
};

// `obj` is a capsule, or a provider: a function from a byte count to a capsule of at least that
// many bytes. With a provider one call sizes the workspace (by conv2d_workspace_bytes, as a
// query would) and runs, which spares the ops a second crossing and lets them reuse a buffer.
template <class Bytes>
Workspace workspace(const py::object& obj, const char* op, Bytes needed) {
  py::object capsule = PyCallable_Check(obj.ptr()) ? obj(needed()) : obj;
  const TensorView v = view(capsule, op, "workspace");
  FASTCNN_CHECK(
      v.dtype == fastcnn::DType::UInt8 && v.ndim == 1 && (v.sizes[0] <= 1 || v.strides[0] == 1), op,
      ": workspace must be a contiguous 1-D uint8 tensor");
  FASTCNN_CHECK(v.device == fastcnn::Device::CPU, op, ": workspace must be on the CPU");
  return {v.data, static_cast<size_t>(v.sizes[0]), std::move(capsule)};
}

fastcnn::cpu::ConvAlgorithm conv_algorithm_named(const std::string& name) {
  if (name == "auto") return fastcnn::cpu::ConvAlgorithm::Auto;
  if (name == "direct") return fastcnn::cpu::ConvAlgorithm::Direct;
  throw fastcnn::ValueError("set_conv_algorithm: algorithm must be 'auto' or 'direct', got '" +
                            name + "'");
}

// Binds name(input, output, threads), an op of one input and one output, to kernel(x, y,
// threads) run without the GIL; `op` names it in error messages.
template <void (*kernel)(const TensorView&, const TensorView&, int)>
void def_unary(py::module_& m, const char* name, const char* op) {
  m.def(
      name,
      [op](py::object input, py::object output, int threads) {
        const TensorView x = view(input, op, "input"), y = view(output, op, "output");
        py::gil_scoped_release nogil;
        kernel(x, y, threads);
      },
      py::arg("input"), py::arg("output"), py::arg("threads"));
}

py::dict cuda_device(int index) {
  fastcnn::cuda::DeviceInfo info{};
  py::dict d;
  if (!fastcnn::cuda::device_info(index, &info)) return d;
  d["name"] = std::string(info.name);
  d["capability"] = py::make_tuple(info.major, info.minor);
  d["total_memory"] = info.total_memory;
  d["multiprocessors"] = info.multiprocessors;
  return d;
}

}  // namespace

#ifndef FASTCNN_WITH_CUDA
// A CPU-only build answers the CUDA queries itself: nothing compiled, nothing visible.
namespace fastcnn::cuda {
int device_count() {
  return 0;
}
bool device_info(int, DeviceInfo*) {
  return false;
}
int runtime_version() {
  return 0;
}
int driver_version() {
  return 0;
}
}  // namespace fastcnn::cuda
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastcnn's compiled kernels. Use fastcnn.ops; these take DLPack capsules.";
  m.attr("__version__") = FASTCNN_VERSION;
  m.attr("max_pool2d_offsets_max_row") = fastcnn::cpu::kMaxPoolOffsetsRow;

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const fastcnn::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const fastcnn::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  m.def("isa", &fastcnn::cpu::isa, "The CPU micro-kernel ISA chosen at load.");
  m.def("advise_huge_pages", &fastcnn::cpu::advise_huge_pages, py::arg("address"),
        py::arg("nbytes"), "Back the block's whole 2 MiB pages with transparent huge pages.");
  m.def(
      "set_conv_algorithm",
      [](const std::string& name) { fastcnn::cpu::set_conv_algorithm(conv_algorithm_named(name)); },
      py::arg("algorithm"), "Forward conv algorithm for the process: 'auto' or 'direct'.");
  m.def("conv_algorithm", [] {
    return fastcnn::cpu::conv_algorithm() == fastcnn::cpu::ConvAlgorithm::Direct ? "direct"
                                                                                 : "auto";
  });
#ifdef FASTCNN_WITH_CUDA
  m.attr("cuda_compiled") = true;
  m.attr("cuda_archs") = FASTCNN_CUDA_ARCHS_STR;
  fastcnn::bindings::register_cuda(m);
#else
  m.attr("cuda_compiled") = false;
  m.attr("cuda_archs") = "";
#endif
  m.def("cuda_device_count", &fastcnn::cuda::device_count);
  m.def("cuda_device", &cuda_device, py::arg("index"));
  m.def("cuda_runtime_version", &fastcnn::cuda::runtime_version);
  m.def("cuda_driver_version", &fastcnn::cuda::driver_version);

  m.def(
      "conv_out_size",
      [](int64_t size, int64_t kernel, int64_t stride, int64_t pad_total, int64_t dilation) {
        check_out_size_args("conv_out_size", size, kernel, stride, pad_total, dilation);
        return fastcnn::conv_out_size(size, kernel, stride, pad_total, dilation);
      },
      py::arg("size"), py::arg("kernel"), py::arg("stride"), py::arg("pad_total"),
      py::arg("dilation"));
  m.def(
      "pool_out_size",
      [](int64_t size, int64_t kernel, int64_t stride, int64_t padding, int64_t dilation,
         bool ceil_mode) {
        check_out_size_args("pool_out_size", size, kernel, stride, padding, dilation);
        return fastcnn::pool_out_size(size, kernel, stride, padding, dilation, ceil_mode);
      },
      py::arg("size"), py::arg("kernel"), py::arg("stride"), py::arg("padding"),
      py::arg("dilation"), py::arg("ceil_mode"));

  m.def(
      "conv2d_workspace",
      [](const std::string& pass, py::object input, py::object weight, py::object output,
         Pair stride, Pair pad_begin, Pair pad_end, Pair dilation, int64_t groups, int threads) {
        const char* op = "conv2d_workspace";
        return fastcnn::cpu::conv2d_workspace_bytes(
            conv_pass(pass), view(input, op, "input"), view(weight, op, "weight"),
            view(output, op, "output"),
            conv_params(op, stride, pad_begin, pad_end, dilation, groups, false), threads);
      },
      py::arg("pass_"), py::arg("input"), py::arg("weight"), py::arg("output"), py::arg("stride"),
      py::arg("pad_begin"), py::arg("pad_end"), py::arg("dilation"), py::arg("groups"),
      py::arg("threads"));

  m.def(
      "conv2d_forward",
      [](py::object input, py::object weight, py::object bias, py::object output, Pair stride,
         Pair pad_begin, Pair pad_end, Pair dilation, int64_t groups, bool relu, py::object ws,
         int threads) {
        const char* op = "conv2d";
        const TensorView x = view(input, op, "input"), w = view(weight, op, "weight"),
                         y = view(output, op, "output");
        const auto b = optional_view(bias, op, "bias");
        const Conv2dParams p = conv_params(op, stride, pad_begin, pad_end, dilation, groups, relu);
        const Workspace s = workspace(ws, op, [&] {
          return fastcnn::cpu::conv2d_workspace_bytes(fastcnn::cpu::ConvPass::Forward, x, w, y, p,
                                                      threads);
        });
        py::gil_scoped_release nogil;
        fastcnn::cpu::conv2d_forward(x, w, ptr(b), y, p, s.data, s.bytes, threads);
      },
      py::arg("input"), py::arg("weight"), py::arg("bias"), py::arg("output"), py::arg("stride"),
      py::arg("pad_begin"), py::arg("pad_end"), py::arg("dilation"), py::arg("groups"),
      py::arg("relu"), py::arg("workspace"), py::arg("threads"));

  m.def(
      "conv2d_backward_input",
      [](py::object grad_output, py::object weight, py::object grad_input, Pair stride,
         Pair pad_begin, Pair pad_end, Pair dilation, int64_t groups, py::object ws, int threads) {
        const char* op = "conv2d_backward_input";
        const TensorView dy = view(grad_output, op, "grad_output"), w = view(weight, op, "weight"),
                         dx = view(grad_input, op, "grad_input");
        const Conv2dParams p = conv_params(op, stride, pad_begin, pad_end, dilation, groups, false);
        const Workspace s = workspace(ws, op, [&] {
          return fastcnn::cpu::conv2d_workspace_bytes(fastcnn::cpu::ConvPass::BackwardInput, dx, w,
                                                      dy, p, threads);
        });
        py::gil_scoped_release nogil;
        fastcnn::cpu::conv2d_backward_input(dy, w, dx, p, s.data, s.bytes, threads);
      },
      py::arg("grad_output"), py::arg("weight"), py::arg("grad_input"), py::arg("stride"),
      py::arg("pad_begin"), py::arg("pad_end"), py::arg("dilation"), py::arg("groups"),
      py::arg("workspace"), py::arg("threads"));

  m.def(
      "conv2d_backward_weight",
      [](py::object grad_output, py::object input, py::object grad_weight, Pair stride,
         Pair pad_begin, Pair pad_end, Pair dilation, int64_t groups, py::object ws, int threads) {
        const char* op = "conv2d_backward_weight";
        const TensorView dy = view(grad_output, op, "grad_output"), x = view(input, op, "input"),
                         dw = view(grad_weight, op, "grad_weight");
        const Conv2dParams p = conv_params(op, stride, pad_begin, pad_end, dilation, groups, false);
        const Workspace s = workspace(ws, op, [&] {
          return fastcnn::cpu::conv2d_workspace_bytes(fastcnn::cpu::ConvPass::BackwardWeight, x, dw,
                                                      dy, p, threads);
        });
        py::gil_scoped_release nogil;
        fastcnn::cpu::conv2d_backward_weight(dy, x, dw, p, s.data, s.bytes, threads);
      },
      py::arg("grad_output"), py::arg("input"), py::arg("grad_weight"), py::arg("stride"),
      py::arg("pad_begin"), py::arg("pad_end"), py::arg("dilation"), py::arg("groups"),
      py::arg("workspace"), py::arg("threads"));

  m.def(
      "conv2d_backward_bias",
      [](py::object grad_output, py::object grad_bias, int threads) {
        const char* op = "conv2d_backward_bias";
        const TensorView dy = view(grad_output, op, "grad_output"),
                         db = view(grad_bias, op, "grad_bias");
        py::gil_scoped_release nogil;
        fastcnn::cpu::conv2d_backward_bias(dy, db, threads);
      },
      py::arg("grad_output"), py::arg("grad_bias"), py::arg("threads"));

  m.def(
      "max_pool2d_forward",
      [](py::object input, py::object output, py::object indices, Pair kernel, Pair stride,
         Pair padding, Pair dilation, bool ceil_mode, int threads) {
        const char* op = "max_pool2d";
        const TensorView x = view(input, op, "input"), y = view(output, op, "output");
        const auto idx = optional_view(indices, op, "indices");
        const Pool2dParams p = pool_params(op, kernel, stride, padding, dilation, ceil_mode);
        py::gil_scoped_release nogil;
        fastcnn::cpu::max_pool2d_forward(x, y, ptr(idx), p, threads);
      },
      py::arg("input"), py::arg("output"), py::arg("indices"), py::arg("kernel_size"),
      py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("ceil_mode"),
      py::arg("threads"));

  m.def(
      "max_pool2d_backward",
      [](py::object grad_output, py::object input, py::object indices, py::object grad_input,
         Pair kernel, Pair stride, Pair padding, Pair dilation, bool ceil_mode, int threads) {
        const char* op = "max_pool2d_backward";
        const TensorView dy = view(grad_output, op, "grad_output"), x = view(input, op, "input"),
                         dx = view(grad_input, op, "grad_input");
        const auto idx = optional_view(indices, op, "indices");
        const Pool2dParams p = pool_params(op, kernel, stride, padding, dilation, ceil_mode);
        py::gil_scoped_release nogil;
        fastcnn::cpu::max_pool2d_backward(dy, x, ptr(idx), dx, p, threads);
      },
      py::arg("grad_output"), py::arg("input"), py::arg("indices"), py::arg("grad_input"),
      py::arg("kernel_size"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
      py::arg("ceil_mode"), py::arg("threads"));

  def_unary<&fastcnn::cpu::global_avg_pool2d_forward>(m, "global_avg_pool2d_forward",
                                                      "global_avg_pool2d");

  m.def(
      "global_avg_pool2d_backward",
      [](py::object grad_output, py::object grad_input, int threads) {
        const char* op = "global_avg_pool2d_backward";
        const TensorView dy = view(grad_output, op, "grad_output"),
                         dx = view(grad_input, op, "grad_input");
        py::gil_scoped_release nogil;
        fastcnn::cpu::global_avg_pool2d_backward(dy, dx, threads);
      },
      py::arg("grad_output"), py::arg("grad_input"), py::arg("threads"));

  def_unary<&fastcnn::cpu::nchw_to_nhwc>(m, "nchw_to_nhwc", "nchw_to_nhwc");

  def_unary<&fastcnn::cpu::relu_forward>(m, "relu_forward", "relu");

  m.def(
      "relu_backward",
      [](py::object grad_output, py::object output, py::object grad_input, bool guided,
         int threads) {
        const char* op = guided ? "guided_relu_backward" : "relu_backward";
        const TensorView dy = view(grad_output, op, "grad_output"), y = view(output, op, "output"),
                         dx = view(grad_input, op, "grad_input");
        py::gil_scoped_release nogil;
        fastcnn::cpu::relu_backward(dy, y, dx, guided, threads);
      },
      py::arg("grad_output"), py::arg("output"), py::arg("grad_input"), py::arg("guided"),
      py::arg("threads"));
}
