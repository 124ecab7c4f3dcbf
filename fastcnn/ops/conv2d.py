"""2-D convolution: ``fastcnn::conv2d`` (optionally fused with bias and ReLU) and its three
backward ops (input, weight, bias), each a custom op so torch.compile traces through them."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.dlpack import to_dlpack

from . import _args, _cuda
from ._boundary import (
    _C,
    capsule,
    dense,
    fresh_output,
    is_channels_last,
    memory_format,
    threads,
    workspace,
)
from ._op import Op
from ._shapes import conv2d_output, empty
from .activation import relu_backward_op

__all__ = ["conv2d"]

_GEOMETRY = "int[2] stride, int[2] pad_begin, int[2] pad_end, int[2] dilation, int groups"
_BACKWARD = "(Tensor grad_output, Tensor {other}, SymInt[4] {size}, bool channels_last, {geometry})"


def _conv2d(input, weight, bias, stride, pad_begin, pad_end, dilation, groups, relu):
    out = fresh_output(conv2d_output(input, weight, stride, pad_begin, pad_end, dilation))
    return conv2d_into(out, input, weight, bias, stride, pad_begin, pad_end, dilation, groups, relu)


def conv2d_into(out, input, weight, bias, stride, pad_begin, pad_end, dilation, groups, relu):
    """The forward convolution written into ``out`` (CPU, no autograd), for callers that
    reuse memory across calls (occlusion); the kernel checks every shape and stride."""
    cb = None if bias is None else to_dlpack(bias.contiguous())
    x, w, y = to_dlpack(dense(input)), to_dlpack(dense(weight)), to_dlpack(out)
    # `workspace` is a provider: the binding sizes the workspace and runs in one call.
    _C.conv2d_forward(
        x, w, cb, y, stride, pad_begin, pad_end, dilation, groups, relu, workspace, threads()
    )
    return out


def _conv2d_fake(input, weight, bias, stride, pad_begin, pad_end, dilation, groups, relu):
    return conv2d_output(input, weight, stride, pad_begin, pad_end, dilation)


def _conv2d_backward_input(
    grad_output, weight, input_size, channels_last, stride, pad_begin, pad_end, dilation, groups
):
    geometry = (stride, pad_begin, pad_end, dilation, groups)
    grad_input = fresh_output(empty(input_size, grad_output, memory_format(channels_last)))
    dy, w, dx = capsule(dense(grad_output)), capsule(dense(weight)), capsule(grad_input)
    _C.conv2d_backward_input(dy, w, dx, *geometry, workspace, threads())
    return grad_input


def _backward_input_fake(
    grad_output, weight, input_size, channels_last, stride, pad_begin, pad_end, dilation, groups
):
    return empty(input_size, grad_output, memory_format(channels_last))


def _weight_gradient_via_channels_last(grad_output: Tensor, input: Tensor, weight_size, groups):
    """Whether an NCHW weight gradient runs faster on channels_last copies of dY and X, through
    the outer-product kernel, than in place through the dot-product kernel. Measured for
    float32 3x3 layers with 32 to 512 channels, the copies included: 1.06-1.16x on layers 14
    to 28 outputs wide, 1.4-2.0x on batches of 8x8 and 4x4 (bench/NOTES.md, "Fifth session");
    with fastcnn's own copy (``_channels_last_copy``), 0.95-1.2x on rows 56 to 224 wide (C4
    1.2x; bench/NOTES.md, "Seventh session"). 1x1 filters measured slower; so did rows under
    12 with fewer than 1024 output positions, which the outer-product kernel leaves to the
    GEMM (conv2d_backward_weight_nhwc.h)."""
    n, _, ho, wo = grad_output.shape
    return (
        input.dtype == torch.float32
        and (wo >= 12 or (wo >= 4 and n * ho * wo >= 1024))
        and weight_size[2] * weight_size[3] > 1
        and weight_size[1] >= 32
        and weight_size[0] // groups >= 32
        and not is_channels_last(input)
    )


def _channels_last_copy(t: Tensor) -> Tensor:
    """``t`` as channels_last, through fastcnn's transposing copy: C10's 12.8 MB input takes
    0.61-0.66 ms with 2 threads, ``t.contiguous(memory_format=torch.channels_last)`` 1.1-1.2."""
    if is_channels_last(t):
        return t
    out = torch.empty_like(t, memory_format=torch.channels_last)
    _C.nchw_to_nhwc(capsule(dense(t)), capsule(out), threads())
    return out


def _conv2d_backward_weight(
    grad_output, input, weight_size, channels_last, stride, pad_begin, pad_end, dilation, groups
):
    geometry = (stride, pad_begin, pad_end, dilation, groups)
    grad_weight = empty(weight_size, grad_output, memory_format(channels_last))
    if _weight_gradient_via_channels_last(grad_output, input, weight_size, groups):
        grad_output, input = _channels_last_copy(grad_output), _channels_last_copy(input)
    dy, x, dw = capsule(dense(grad_output)), capsule(dense(input)), capsule(grad_weight)
    _C.conv2d_backward_weight(dy, x, dw, *geometry, workspace, threads())
    return grad_weight


def _backward_weight_fake(
    grad_output, input, weight_size, channels_last, stride, pad_begin, pad_end, dilation, groups
):
    return empty(weight_size, grad_output, memory_format(channels_last))


def _conv2d_backward_bias(grad_output: Tensor) -> Tensor:
    grad_bias = grad_output.new_empty(grad_output.shape[1])
    _C.conv2d_backward_bias(capsule(dense(grad_output)), capsule(grad_bias), threads())
    return grad_bias


def _backward_bias_fake(grad_output: Tensor) -> Tensor:
    return grad_output.new_empty(grad_output.shape[1])


conv2d_op = Op(
    "conv2d",
    _conv2d,
    _conv2d_fake,
    f"(Tensor input, Tensor weight, Tensor? bias, {_GEOMETRY}, bool relu) -> Tensor",
    cuda=_cuda.conv2d,
)
backward_input_op = Op(
    "conv2d_backward_input",
    _conv2d_backward_input,
    _backward_input_fake,
    _BACKWARD.format(other="weight", size="input_size", geometry=_GEOMETRY) + " -> Tensor",
    cuda=_cuda.conv2d_backward_input,
)
backward_weight_op = Op(
    "conv2d_backward_weight",
    _conv2d_backward_weight,
    _backward_weight_fake,
    _BACKWARD.format(other="input", size="weight_size", geometry=_GEOMETRY) + " -> Tensor",
    cuda=_cuda.conv2d_backward_weight,
)
backward_bias_op = Op(
    "conv2d_backward_bias",
    _conv2d_backward_bias,
    _backward_bias_fake,
    cuda=_cuda.conv2d_backward_bias,
)


def _setup_context(ctx, inputs, output):
    input, weight, bias, stride, pad_begin, pad_end, dilation, groups, relu = inputs
    ctx.geometry = (stride, pad_begin, pad_end, dilation, groups)
    ctx.relu = relu
    ctx.has_bias = bias is not None
    ctx.layouts = (is_channels_last(input), is_channels_last(weight))
    ctx.save_for_backward(input, weight, output if relu else None)


def _backward(ctx, grad):
    input, weight, output = ctx.saved_tensors
    if ctx.relu:
        grad = relu_backward_op(grad, output)
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    grad_input = grad_weight = grad_bias = None
    if need_input:
        grad_input = backward_input_op(grad, weight, input.shape, ctx.layouts[0], *ctx.geometry)
    if need_weight:
        grad_weight = backward_weight_op(grad, input, weight.shape, ctx.layouts[1], *ctx.geometry)
    if ctx.has_bias and need_bias:
        grad_bias = backward_bias_op(grad)
    return grad_input, grad_weight, grad_bias, None, None, None, None, None, None


conv2d_op.register_autograd(_backward, setup_context=_setup_context)
for _op in (backward_input_op, backward_weight_op, backward_bias_op):
    _op.forbid_double_backward("conv2d")


def _padding(op: str, padding, kernel: tuple, stride: tuple, dilation: tuple):
    """(pad_begin, pad_end) per spatial dim; 'same' puts the odd pixel at the end, as torch."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{op}: padding='same' needs stride 1, got stride {stride}")
            total = tuple(d * (k - 1) for d, k in zip(dilation, kernel))
            begin = tuple(t // 2 for t in total)
            return begin, tuple(t - b for t, b in zip(total, begin))
        raise ValueError(
            f"{op}: padding must be an int, a pair, 'same' or 'valid', got {padding!r}"
        )
    pad = _args.pair(op, "padding", padding, 0)
    return pad, pad


def _geometry(op: str, stride, padding, dilation, kernel: tuple):
    """(stride, pad_begin, pad_end, dilation) as checked pairs."""
    ints = type(stride) is int and type(padding) is int and type(dilation) is int
    if ints and stride >= 1 and padding >= 0 and dilation >= 1:  # the common case
        pad = (padding, padding)
        return (stride, stride), pad, pad, (dilation, dilation)
    stride = _args.pair(op, "stride", stride, 1)
    dilation = _args.pair(op, "dilation", dilation, 1)
    return (stride, *_padding(op, padding, kernel, stride, dilation), dilation)


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    *,
    activation: str | None = None,
) -> Tensor:
    """2-D convolution (cross-correlation), as :func:`torch.nn.functional.conv2d`.

    Args:
        input: Tensor[N, C, H, W] (or unbatched Tensor[C, H, W]), contiguous or channels_last.
        weight: Tensor[K, C/groups, R, S].
        bias: optional Tensor[K].
        stride, dilation: int or pair, >= 1.
        padding: int or pair >= 0, ``"valid"`` (none) or ``"same"`` (output size = input size;
            stride 1 only; an odd total puts the extra pixel at the bottom/right).
        groups: splits C and K into this many independent convolutions (``groups == C``:
            depthwise).
        activation: ``None`` or ``"relu"``: fuse ``max(conv + bias, 0)`` into the epilogue.

    float32 3x3 convolutions with stride 1, dilation 1, groups 1 and at least 8 input and 8
    output channels run forward as Winograd F(4x4, 3x3): against a float64 convolution of the
    same inputs, ``max |y - y64| / max |y64|`` stays below 1e-4. Their input gradient runs as
    the forward convolution of the output gradient with flipped filters, so it takes Winograd
    too, under the same bound; so does their weight gradient (the forward's adjoint) where it
    has at least 128 output tiles of 4x4 and channels_last operands (NCHW ones with at least
    32 input and output channels are copied so), unless dY or X holds Inf or NaN. float32
    stride-2 stems (at most 4 input channels, 5 to 8 kernel
    columns, at least 64 taps per window) run forward as a 1-D Winograd F(5, 4) along the
    output rows, within 1e-5 by the same measure. Force direct convolution with
    :func:`fastcnn.ops.use_conv_algorithm` (``"direct"``) or ``FASTCNN_CONV_ALGO=direct``.

    Returns:
        Tensor[N, K, Ho, Wo], channels_last when the input or the weight is (as torch).
    """
    op = "conv2d"
    operands = (input, weight) if bias is None else (input, weight, bias)
    if not (
        _args.same_cpu_floats(*operands)
        and input.dim() in (3, 4)
        and weight.dim() == 4
        and (bias is None or bias.dim() == 1)
    ):
        _args.tensor(op, "input", input, (3, 4), "[N, C, H, W]")
        _args.tensor(op, "weight", weight, 4, "[K, C/groups, R, S]")
        _args.same_kind(op, "weight", weight, "input", input)
        if bias is not None:
            _args.tensor(op, "bias", bias, 1, "[K]")
            _args.same_kind(op, "bias", bias, "input", input)
    if not _args._is_int(groups) or groups < 1:
        raise ValueError(f"{op}: groups must be an int >= 1, got {groups!r}")
    if activation not in (None, "relu"):
        raise ValueError(f"{op}: activation must be None or 'relu', got {activation!r}")
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    c, (k, c_group, r, s) = input.shape[1], weight.shape
    kernel = (r, s)
    if c % groups or k % groups:
        raise ValueError(
            f"{op}: input channels ({c}) and filters ({k}) must be divisible by groups ({groups})"
        )
    if k == 0:
        raise ValueError(
            f"{op}: weight must have at least one filter, got shape {tuple(weight.shape)}"
        )
    if c_group * groups != c or c_group == 0 or r < 1 or s < 1:
        raise ValueError(
            f"{op}: weight must be [K, C/groups, R, S] = [{k}, {c // groups}, R>=1, S>=1] for an "
            f"input with {c} channels and groups={groups}, got shape {tuple(weight.shape)}"
        )
    if bias is not None and bias.shape[0] != k:
        raise ValueError(f"{op}: bias must have shape ({k},), got {tuple(bias.shape)}")
    stride, pad_begin, pad_end, dilation = _geometry(op, stride, padding, dilation, kernel)
    out = conv2d_op(
        input, weight, bias, stride, pad_begin, pad_end, dilation, groups, activation == "relu"
    )
    return out.squeeze(0) if unbatched else out
