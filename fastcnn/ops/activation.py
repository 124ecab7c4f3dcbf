"""ReLU and guided ReLU: ``fastcnn::relu``, ``fastcnn::guided_relu`` and their backward ops."""

from __future__ import annotations

import torch
from torch import Tensor

from . import _args, _cuda
from ._boundary import _C, capsule, dense, flat, fresh_output, threads
from ._op import Op

__all__ = ["relu", "guided_relu"]


def _like(t: Tensor, ref: Tensor) -> Tensor:
    """``t`` laid out with the strides of ``ref`` (copied only when they differ)."""
    return t if t.stride() == ref.stride() else torch.empty_like(ref).copy_(t)


def _forward(input: Tensor) -> Tensor:
    x = dense(input)
    out = fresh_output(torch.empty_like(x))
    _C.relu_forward(capsule(flat(x)), capsule(flat(out)), threads())
    return out


def _backward(grad_output: Tensor, output: Tensor, guided: bool) -> Tensor:
    y = dense(output)
    dy = _like(grad_output, y)
    dx = fresh_output(torch.empty_like(y))
    _C.relu_backward(capsule(flat(dy)), capsule(flat(y)), capsule(flat(dx)), guided, threads())
    return dx


def _forward_fake(input: Tensor) -> Tensor:
    return torch.empty_like(dense(input))


def _backward_fake(grad_output: Tensor, output: Tensor) -> Tensor:
    return torch.empty_like(dense(output))


def _relu_backward(grad_output: Tensor, output: Tensor) -> Tensor:
    return _backward(grad_output, output, guided=False)


def _guided_relu_backward(grad_output: Tensor, output: Tensor) -> Tensor:
    return _backward(grad_output, output, guided=True)


def _relu_backward_cuda(grad_output: Tensor, output: Tensor) -> Tensor:
    return _cuda.relu_backward(grad_output, output, guided=False)


def _guided_relu_backward_cuda(grad_output: Tensor, output: Tensor) -> Tensor:
    return _cuda.relu_backward(grad_output, output, guided=True)


relu_op = Op("relu", _forward, _forward_fake, cuda=_cuda.relu)
guided_relu_op = Op("guided_relu", _forward, _forward_fake, cuda=_cuda.relu)
relu_backward_op = Op("relu_backward", _relu_backward, _backward_fake, cuda=_relu_backward_cuda)
guided_relu_backward_op = Op(
    "guided_relu_backward", _guided_relu_backward, _backward_fake, cuda=_guided_relu_backward_cuda
)


def _save_output(ctx, inputs, output):
    ctx.save_for_backward(output)


relu_op.register_autograd(
    lambda ctx, grad: relu_backward_op(grad, ctx.saved_tensors[0]), setup_context=_save_output
)
guided_relu_op.register_autograd(
    lambda ctx, grad: guided_relu_backward_op(grad, ctx.saved_tensors[0]),
    setup_context=_save_output,
)
relu_backward_op.forbid_double_backward("relu")
guided_relu_backward_op.forbid_double_backward("guided_relu")


def relu(input: Tensor) -> Tensor:
    """``max(input, 0)``, as :func:`torch.relu` (NaN stays NaN). Any shape and layout.

    Args:
        input: Tensor[...] of float32 or float64.

    Returns:
        Tensor shaped like ``input``; laid out like it when ``input`` is contiguous or
        channels_last (other layouts come back contiguous).
    """
    _args.tensor("relu", "input", input, None)
    return relu_op(input)


def guided_relu(input: Tensor) -> Tensor:
    """ReLU whose backward passes only positive gradients where the input was positive:
    ``grad_input = grad * (grad > 0) * (input > 0)`` (guided backpropagation).

    Args:
        input: Tensor[...] of float32 or float64.

    Returns:
        Tensor shaped and laid out like ``input``; forward equals :func:`relu`.
    """
    _args.tensor("guided_relu", "input", input, None)
    return guided_relu_op(input)
