"""The CUDA kernels, one function per kernel, over torch tensors.

Each function allocates its outputs (and any workspace) with torch on the input's device,
in the memory format the CPU op would use, and launches on torch's current stream of that
device. The custom ops in :mod:`fastcnn.ops` call these for CUDA tensors.

The kernels passed ``tests/test_cuda.py`` and compute-sanitizer on an H200, but the whole
test suite has not yet passed on a GPU: :func:`enabled` is true only when the extension was
built with CUDA *and* the environment variable ``FASTCNN_CUDA_UNVERIFIED=1`` is set. Until
then CUDA tensors stay rejected.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from ._boundary import _C, capsule, dense, flat, is_channels_last, memory_format
from ._shapes import (
    conv2d_output,
    empty,
    max_pool2d_offset_dtype,
    max_pool2d_outputs,
)

__all__ = [
    "enabled",
    "conv2d",
    "conv2d_backward_input",
    "conv2d_backward_weight",
    "conv2d_backward_bias",
    "max_pool2d",
    "max_pool2d_backward",
    "max_pool2d_offset_dtype",
    "global_avg_pool2d",
    "global_avg_pool2d_backward",
    "relu",
    "relu_backward",
]


def enabled() -> bool:
    """Whether CUDA tensors may use these kernels: the extension was built with CUDA and
    ``FASTCNN_CUDA_UNVERIFIED=1`` is set (the whole suite has not yet passed on a GPU)."""
    return bool(_C.cuda_compiled) and os.environ.get("FASTCNN_CUDA_UNVERIFIED") == "1"


def _stream(t: Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream


def _allow_tf32(allow_tf32: bool | None) -> bool:
    """TF32 for float32 convolutions follows torch's own switch for its convolutions."""
    return torch.backends.cudnn.allow_tf32 if allow_tf32 is None else bool(allow_tf32)


def relu(input: Tensor) -> Tensor:
    """``max(input, 0)`` of a tensor of any shape; NaN stays NaN. Same layout as ``input``."""
    x = dense(input)
    out = torch.empty_like(x)
    _C.relu_forward_cuda(capsule(flat(x)), capsule(flat(out)), _stream(x))
    return out


def relu_backward(grad_output: Tensor, output: Tensor, guided: bool = False) -> Tensor:
    """``grad_output * (output > 0)``; guided also zeroes negative gradients. Shapes match."""
    y = dense(output)
    dy = (
        grad_output
        if grad_output.stride() == y.stride()
        else torch.empty_like(y).copy_(grad_output)
    )
    dx = torch.empty_like(y)
    _C.relu_backward_cuda(
        capsule(flat(dy)), capsule(flat(y)), capsule(flat(dx)), bool(guided), _stream(y)
    )
    return dx


def global_avg_pool2d(input: Tensor) -> Tensor:
    """Tensor[N, C, H, W] -> Tensor[N, C], the mean of each plane (float accumulation)."""
    x = dense(input)
    out = x.new_empty(x.shape[:2])
    _C.global_avg_pool2d_forward_cuda(capsule(x), capsule(out), _stream(x))
    return out


def global_avg_pool2d_backward(grad_output: Tensor, input_size, channels_last: bool) -> Tensor:
    """Tensor[N, C] -> Tensor[input_size], each plane filled with grad / (H * W)."""
    grad_input = empty(input_size, grad_output, memory_format(channels_last))
    dy = grad_output.contiguous()
    _C.global_avg_pool2d_backward_cuda(capsule(dy), capsule(grad_input), _stream(dy))
    return grad_input


def max_pool2d(
    input: Tensor,
    kernel_size,
    stride,
    padding,
    dilation,
    ceil_mode: bool,
    return_indices: bool,
    keep_offsets: bool = False,
) -> tuple[Tensor, Tensor]:
    """Max pooling of Tensor[N, C, H, W] (geometry as pairs, already normalized).

    Returns ``(output, saved)``, both Tensor[N, C, Ho, Wo] in the input's memory format:
    ``saved`` holds int64 indices (flat ``h * W + w``, torch's convention) when
    ``return_indices``, else compact window offsets (:func:`max_pool2d_offset_dtype`) for
    :func:`max_pool2d_backward`, whether or not ``keep_offsets`` asks for them.
    """
    x = dense(input)
    out, saved = max_pool2d_outputs(
        x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, keep_offsets
    )
    _C.max_pool2d_forward_cuda(
        capsule(x),
        capsule(out),
        capsule(saved),
        kernel_size,
        stride,
        padding,
        dilation,
        bool(ceil_mode),
        _stream(x),
    )
    return out, saved


def max_pool2d_backward(
    grad_output: Tensor,
    input: Tensor,
    saved: Tensor | None,
    kernel_size,
    stride,
    padding,
    dilation,
    ceil_mode: bool,
    deterministic: bool | None = None,
) -> Tensor:
    """The gradient of :func:`max_pool2d` w.r.t. its input: Tensor[N, C, H, W] like input.

    ``saved`` is the forward's second output (indices or window offsets), or ``None`` to
    recompute each window's argmax. ``deterministic`` (default: torch's
    ``are_deterministic_algorithms_enabled()``) gathers in a fixed order instead of
    scattering with atomics where windows overlap.
    """
    x = dense(input)
    fmt = memory_format(is_channels_last(x))
    grad_input = torch.empty_like(x, memory_format=fmt)
    dy = grad_output.contiguous(memory_format=fmt)
    s = None if saved is None else saved.contiguous(memory_format=fmt)
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    _C.max_pool2d_backward_cuda(
        capsule(dy),
        capsule(x),
        capsule(s),
        capsule(grad_input),
        kernel_size,
        stride,
        padding,
        dilation,
        bool(ceil_mode),
        bool(deterministic),
        _stream(x),
    )
    return grad_input


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride,
    pad_begin,
    pad_end,
    dilation,
    groups: int,
    relu: bool = False,
    allow_tf32: bool | None = None,
) -> Tensor:
    """Tensor[N, C, H, W] * Tensor[K, C/groups, R, S] (+ bias Tensor[K], then ReLU when
    ``relu``) -> Tensor[N, K, Ho, Wo]. ``allow_tf32`` (default: torch's
    ``backends.cudnn.allow_tf32``) lets float32 use TF32 tensor cores."""
    x, w = dense(input), dense(weight)
    out = conv2d_output(x, w, stride, pad_begin, pad_end, dilation)
    b = None if bias is None else bias.contiguous()
    _C.conv2d_forward_cuda(
        capsule(x),
        capsule(w),
        capsule(b),
        capsule(out),
        stride,
        pad_begin,
        pad_end,
        dilation,
        groups,
        bool(relu),
        _allow_tf32(allow_tf32),
        _stream(x),
    )
    return out


def conv2d_backward_input(
    grad_output: Tensor,
    weight: Tensor,
    input_size,
    channels_last: bool,
    stride,
    pad_begin,
    pad_end,
    dilation,
    groups: int,
    allow_tf32: bool | None = None,
) -> Tensor:
    """Tensor[N, K, Ho, Wo] -> the input gradient Tensor[input_size]."""
    dy, w = dense(grad_output), dense(weight)
    grad_input = empty(input_size, dy, memory_format(channels_last))
    _C.conv2d_backward_input_cuda(
        capsule(dy),
        capsule(w),
        capsule(grad_input),
        stride,
        pad_begin,
        pad_end,
        dilation,
        groups,
        _allow_tf32(allow_tf32),
        _stream(dy),
    )
    return grad_input


def conv2d_backward_weight(
    grad_output: Tensor,
    input: Tensor,
    weight_size,
    channels_last: bool,
    stride,
    pad_begin,
    pad_end,
    dilation,
    groups: int,
    allow_tf32: bool | None = None,
) -> Tensor:
    """Tensor[N, K, Ho, Wo] and the input -> the weight gradient Tensor[weight_size].
    The reduction is split over slices whose float partial sums (a workspace from torch's
    allocator) are added in a fixed order: deterministic."""
    dy, x = dense(grad_output), dense(input)
    grad_weight = empty(weight_size, dy, memory_format(channels_last))
    geometry = (stride, pad_begin, pad_end, dilation, groups)
    cx, cw, cy = capsule(x), capsule(grad_weight), capsule(dy)
    nbytes = _C.conv2d_workspace_cuda("backward_weight", cx, cw, cy, *geometry)
    workspace = torch.empty(nbytes, dtype=torch.uint8, device=dy.device)
    _C.conv2d_backward_weight_cuda(
        cy, cx, cw, *geometry, capsule(workspace), _allow_tf32(allow_tf32), _stream(dy)
    )
    return grad_weight


def conv2d_backward_bias(grad_output: Tensor) -> Tensor:
    """Tensor[N, K, Ho, Wo] -> Tensor[K], the sum over batch and pixels."""
    dy = dense(grad_output)
    grad_bias = dy.new_empty(dy.shape[1])
    _C.conv2d_backward_bias_cuda(capsule(dy), capsule(grad_bias), _stream(dy))
    return grad_bias
