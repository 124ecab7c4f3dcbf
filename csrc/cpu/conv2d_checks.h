// The argument checks of a convolution's three tensors that do not depend on the device:
// parameters, sizes and the output's shape. The CPU and CUDA entry points run them after their
// own device, dtype and layout checks, so both give the same messages.
#pragma once

#include <cstdint>

#include "cpu/checks.h"
#include "fastcnn/error.h"
#include "fastcnn/ops.h"
#include "fastcnn/tensor.h"

namespace fastcnn::cpu {

// How the messages of one pass name its operation and tensors.
struct ConvNames {
  const char* op;
  const char* image;
  const char* weight;
  const char* output;
};
inline constexpr ConvNames kConvForward{"conv2d", "input", "weight", "output"};
inline constexpr ConvNames kConvBackwardInput{"conv2d_backward_input", "grad_input", "weight",
                                              "grad_output"};
inline constexpr ConvNames kConvBackwardWeight{"conv2d_backward_weight", "input", "grad_weight",
                                               "grad_output"};

inline const ConvNames& conv_names(ConvPass pass) {
  return pass == ConvPass::Forward         ? kConvForward
         : pass == ConvPass::BackwardInput ? kConvBackwardInput
                                           : kConvBackwardWeight;
}

// Checks the parameters and sizes of image x, weight w and output y, and fills the sizes,
// strides, padding and dilation fields of g (any geometry struct with those names).
template <typename Geom>
void check_conv_geometry(const ConvNames& nm, const TensorView& x, const TensorView& w,
                         const TensorView& y, const Conv2dParams& p, Geom& g) {
  for (int i = 0; i < 2; ++i) {
    FASTCNN_CHECK(p.stride[i] >= 1, nm.op, ": stride must be >= 1, got ", p.stride[i]);
    FASTCNN_CHECK(p.dilation[i] >= 1, nm.op, ": dilation must be >= 1, got ", p.dilation[i]);
    FASTCNN_CHECK(p.pad_begin[i] >= 0 && p.pad_end[i] >= 0, nm.op, ": padding must be >= 0, got ",
                  p.pad_begin[i], " and ", p.pad_end[i]);
  }
  FASTCNN_CHECK(p.groups >= 1, nm.op, ": groups must be >= 1, got ", p.groups);
  g.N = x.sizes[0], g.C = x.sizes[1], g.H = x.sizes[2], g.W = x.sizes[3];
  g.K = w.sizes[0], g.R = w.sizes[2], g.S = w.sizes[3], g.G = p.groups;
  FASTCNN_CHECK(g.K >= 1, nm.op, ": ", nm.weight, " must have at least one filter, got shape (",
                g.K, ", ", w.sizes[1], ", ", g.R, ", ", g.S, ")");
  FASTCNN_CHECK(g.C % g.G == 0 && g.K % g.G == 0, nm.op, ": channels (", g.C, ") and filters (",
                g.K, ") must be divisible by groups (", g.G, ")");
  g.Cg = g.C / g.G, g.Kg = g.K / g.G;
  FASTCNN_CHECK(w.sizes[1] == g.Cg, nm.op, ": ", nm.weight,
                " must be [K, C/groups, R, S] with C/groups = ", g.Cg, ", got ", w.sizes[1],
                " input channels per group");
  FASTCNN_CHECK(g.C >= 1 && g.R >= 1 && g.S >= 1, nm.op, ": ", nm.weight,
                " must have at least one input channel and a kernel of at least 1x1");
  g.sh = p.stride[0], g.sw = p.stride[1], g.dh = p.dilation[0], g.dw = p.dilation[1];
  g.ph = p.pad_begin[0], g.pw = p.pad_begin[1];
  g.Ho = conv_out_size(g.H, g.R, g.sh, p.pad_begin[0] + p.pad_end[0], g.dh);
  g.Wo = conv_out_size(g.W, g.S, g.sw, p.pad_begin[1] + p.pad_end[1], g.dw);
  FASTCNN_CHECK(g.Ho >= 1 && g.Wo >= 1, nm.op, ": the kernel (", g.dh * (g.R - 1) + 1, "x",
                g.dw * (g.S - 1) + 1, " with dilation) is larger than the padded input (",
                g.H + p.pad_begin[0] + p.pad_end[0], "x", g.W + p.pad_begin[1] + p.pad_end[1], ")");
  check_sizes(nm.op, nm.output, y, {g.N, g.K, g.Ho, g.Wo});
}

}  // namespace fastcnn::cpu
