"""Global average pooling: ``fastcnn::global_avg_pool2d`` and its backward op."""

from __future__ import annotations

from torch import Tensor

from . import _args, _cuda
from ._boundary import _C, capsule, dense, fresh_output, is_channels_last, memory_format, threads
from ._op import Op
from ._shapes import empty

__all__ = ["global_avg_pool2d"]


def _global_avg_pool2d(input: Tensor) -> Tensor:
    x = dense(input)
    out = x.new_empty(size=x.shape[:2])  # by keyword: a positional size parses ~0.5 us slower
    _C.global_avg_pool2d_forward(capsule(x), capsule(out), threads())
    return out


def _forward_fake(input: Tensor) -> Tensor:
    return input.new_empty(input.shape[:2])


def _global_avg_pool2d_backward(grad_output, input_size, channels_last):
    grad_input = fresh_output(empty(input_size, grad_output, memory_format(channels_last)))
    _C.global_avg_pool2d_backward(capsule(grad_output.contiguous()), capsule(grad_input), threads())
    return grad_input


def _backward_fake(grad_output, input_size, channels_last):
    return empty(input_size, grad_output, memory_format(channels_last))


global_avg_pool2d_op = Op(
    "global_avg_pool2d", _global_avg_pool2d, _forward_fake, cuda=_cuda.global_avg_pool2d
)
backward_op = Op(
    "global_avg_pool2d_backward",
    _global_avg_pool2d_backward,
    _backward_fake,
    "(Tensor grad_output, SymInt[4] input_size, bool channels_last) -> Tensor",
    cuda=_cuda.global_avg_pool2d_backward,
)


def _setup_context(ctx, inputs, output):
    (input,) = inputs
    ctx.input_size = input.shape
    ctx.channels_last = is_channels_last(input)


def _backward(ctx, grad):
    return backward_op(grad, ctx.input_size, ctx.channels_last)


global_avg_pool2d_op.register_autograd(_backward, setup_context=_setup_context)
backward_op.forbid_double_backward("global_avg_pool2d")


def global_avg_pool2d(input: Tensor, keepdim: bool = False) -> Tensor:
    """The mean over each channel's H x W plane.

    Args:
        input: Tensor[N, C, H, W], contiguous or channels_last, with H * W > 0.
        keepdim: return Tensor[N, C, 1, 1] (as ``nn.AdaptiveAvgPool2d(1)``) instead of [N, C].

    Returns:
        Tensor[N, C], or Tensor[N, C, 1, 1] with ``keepdim``.
    """
    op = "global_avg_pool2d"
    _args.tensor(op, "input", input, 4, "[N, C, H, W]")
    if input.shape[2] * input.shape[3] == 0:
        raise ValueError(
            f"{op}: input must have a non-empty H x W plane, got shape {tuple(input.shape)}"
        )
    out = global_avg_pool2d_op(input)
    return out[:, :, None, None] if keepdim else out
