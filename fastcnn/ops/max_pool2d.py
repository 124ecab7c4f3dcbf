"""Max pooling: ``fastcnn::max_pool2d`` and ``fastcnn::max_pool2d_backward``.

Indices are materialized only when asked for (``return_indices=True``). Otherwise, when the
input needs a gradient, the forward keeps each window's argmax as a one-byte offset where the
kernels have them (NCHW 2x2 and 3x3 windows of stride 2, and every CUDA call), and the
backward reads those instead of the input; elsewhere the backward recomputes each window's
argmax from the saved input, with the same tie and NaN rules as the forward, so the two
always agree.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _args, _cuda
from ._boundary import _C, capsule, dense, fresh_output, is_channels_last, memory_format, threads
from ._op import Op
from ._shapes import max_pool2d_outputs

__all__ = ["max_pool2d"]

_GEOMETRY = "int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode"


def _max_pool2d(
    input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, keep_offsets=False
):
    x = dense(input)
    out, indices = max_pool2d_outputs(
        x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, keep_offsets
    )
    fresh_output(out)
    _C.max_pool2d_forward(
        capsule(x),
        capsule(out),
        capsule(indices) if _saved(indices) else None,
        kernel_size,
        stride,
        padding,
        dilation,
        ceil_mode,
        threads(),
    )
    return out, indices


def _saved(indices: Tensor) -> bool:
    """Whether the forward's second output holds indices or offsets (else it is the empty
    placeholder, and the backward recomputes the argmax)."""
    return indices.dim() == 4


def _forward_fake(input, *geometry_and_flags):
    return max_pool2d_outputs(dense(input), *geometry_and_flags)


def _max_pool2d_backward(
    grad_output, input, indices, kernel_size, stride, padding, dilation, ceil_mode
):
    x = dense(input)
    fmt = memory_format(is_channels_last(x))
    grad_input = fresh_output(torch.empty_like(x, memory_format=fmt))
    # The kernel walks grad_output and indices in the layout of the forward's output.
    dy = grad_output.contiguous(memory_format=fmt)
    idx = None if indices is None else indices.contiguous(memory_format=fmt)
    _C.max_pool2d_backward(
        capsule(dy),
        capsule(x),
        capsule(idx),
        capsule(grad_input),
        kernel_size,
        stride,
        padding,
        dilation,
        ceil_mode,
        threads(),
    )
    return grad_input


def _backward_fake(grad_output, input, indices, kernel_size, stride, padding, dilation, ceil_mode):
    x = dense(input)
    return torch.empty_like(x, memory_format=memory_format(is_channels_last(x)))


max_pool2d_op = Op(
    "max_pool2d",
    _max_pool2d,
    _forward_fake,
    f"(Tensor input, {_GEOMETRY}, bool return_indices, bool keep_offsets=False)"
    " -> (Tensor, Tensor)",
    cuda=_cuda.max_pool2d,
)
backward_op = Op(
    "max_pool2d_backward",
    _max_pool2d_backward,
    _backward_fake,
    f"(Tensor grad_output, Tensor input, Tensor? indices, {_GEOMETRY}) -> Tensor",
    cuda=_cuda.max_pool2d_backward,
)


def _setup_context(ctx, inputs, output):
    input, kernel_size, stride, padding, dilation, ceil_mode = inputs[:6]
    ctx.geometry = (kernel_size, stride, padding, dilation, ceil_mode)
    ctx.save_for_backward(input, output[1] if _saved(output[1]) else None)


def _backward(ctx, grad_out, grad_indices):
    input, indices = ctx.saved_tensors
    grad = backward_op(grad_out, input, indices, *ctx.geometry)
    return grad, None, None, None, None, None, None, None


max_pool2d_op.register_autograd(_backward, setup_context=_setup_context)
backward_op.forbid_double_backward("max_pool2d")


def max_pool2d(
    input: Tensor,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode: bool = False,
    return_indices: bool = False,
):
    """2-D max pooling, as :func:`torch.nn.functional.max_pool2d`.

    Ties keep the first maximum in window order; a NaN in a window wins, as in torch.

    Args:
        input: Tensor[N, C, H, W] (or unbatched Tensor[C, H, W]), contiguous or channels_last.
        kernel_size: int or pair, >= 1.
        stride: int or pair >= 1; ``None`` (default) means ``kernel_size``.
        padding: int or pair, implicit -inf padding, at most half the kernel size.
        dilation: int or pair, >= 1.
        ceil_mode: round the output size up instead of down.
        return_indices: also return int64 indices, flat ``h * W + w`` in each plane (the
            convention :func:`torch.nn.functional.max_unpool2d` takes).

    Returns:
        Tensor[N, C, Ho, Wo] in the input's memory format, and with ``return_indices`` the
        indices Tensor[N, C, Ho, Wo] as a pair.
    """
    op = "max_pool2d"
    _args.tensor(op, "input", input, (3, 4), "[N, C, H, W]")
    kernel = _args.pair(op, "kernel_size", kernel_size, 1)
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        stride = kernel
    stride = _args.pair(op, "stride", stride, 1)
    padding = _args.pair(op, "padding", padding, 0)
    dilation = _args.pair(op, "dilation", dilation, 1)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(
            f"{op}: padding must be at most half the kernel size {kernel}, got {padding}"
        )
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    keep_offsets = input.requires_grad and torch.is_grad_enabled()
    out, indices = max_pool2d_op(
        input,
        kernel,
        stride,
        padding,
        dilation,
        bool(ceil_mode),
        bool(return_indices),
        keep_offsets,
    )
    if unbatched:
        out, indices = out.squeeze(0), indices.squeeze(0)
    return (out, indices) if return_indices else out
