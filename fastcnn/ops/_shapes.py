"""Output shapes and memory formats of every op: one definition, shared by the real kernels
and the fake (meta) kernels that torch.compile traces with. Works on SymInts."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._boundary import _C, is_channels_last, memory_format


def pool_out_size(size, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool):
    span = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    # The last window must start inside the input or its left padding (as torch).
    if ceil_mode and (out - 1) * stride >= size + padding:
        out = out - 1
    return out


def conv2d_output_shape(
    input_size: Sequence, weight_size: Sequence, stride, pad_begin, pad_end, dilation
) -> tuple:
    """Checked here, where every route (CPU, CUDA, fake) computes it once: a kernel larger
    than the padded input is a ValueError."""
    n, _, h, w = input_size
    k, _, r, s = weight_size
    # Written out: on a tiny call, a helper's two frames cost a visible share.
    ho = (h + pad_begin[0] + pad_end[0] - dilation[0] * (r - 1) - 1) // stride[0] + 1
    wo = (w + pad_begin[1] + pad_end[1] - dilation[1] * (s - 1) - 1) // stride[1] + 1
    if ho < 1 or wo < 1:
        padded = (h + pad_begin[0] + pad_end[0], w + pad_begin[1] + pad_end[1])
        span = (dilation[0] * (r - 1) + 1, dilation[1] * (s - 1) + 1)
        raise ValueError(
            f"conv2d: the kernel ({span[0]}x{span[1]} with dilation) is larger than the padded "
            f"input ({padded[0]}x{padded[1]})"
        )
    return (n, k, ho, wo)


def conv2d_output(input: torch.Tensor, weight: torch.Tensor, stride, pad_begin, pad_end, dilation):
    """The forward output, uninitialized: its shape checked by ``conv2d_output_shape``,
    channels_last when the input or the weight is (as torch on the CPU)."""
    shape = conv2d_output_shape(input.shape, weight.shape, stride, pad_begin, pad_end, dilation)
    channels_last = is_channels_last(input) or is_channels_last(weight)
    # `empty` written out: two frames fewer on every forward call.
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(size=shape, dtype=input.dtype, device=input.device, memory_format=fmt)


def pool2d_output_shape(input_size: Sequence, kernel_size, stride, padding, dilation, ceil_mode):
    n, c, h, w = input_size
    return (
        n,
        c,
        pool_out_size(h, kernel_size[0], stride[0], padding[0], dilation[0], ceil_mode),
        pool_out_size(w, kernel_size[1], stride[1], padding[1], dilation[1], ceil_mode),
    )


def empty(shape, like: torch.Tensor, fmt: torch.memory_format, dtype=None) -> torch.Tensor:
    # size= by keyword: a positional shape costs torch's argument parser about 0.5 us more.
    return torch.empty(size=shape, dtype=dtype or like.dtype, device=like.device, memory_format=fmt)


def max_pool2d_offset_dtype(kernel_size) -> torch.dtype:
    """The compact dtype of the window offsets CUDA saves for the backward: uint8 below 256
    taps (kh * kw marks an empty window), else int32."""
    return torch.uint8 if kernel_size[0] * kernel_size[1] < 256 else torch.int32


def _keeps_offsets(input_size, kernel_size, stride, padding, dilation, shape) -> bool:
    """Whether the CPU forward can keep window offsets for the backward of NCHW planes
    (``keeps_offsets`` in csrc/cpu/max_pool2d.cpp): 2x2 stride-2 windows that tile them, or
    3x3 stride-2 windows with rows of at most ``max_pool2d_offsets_max_row`` outputs."""
    if tuple(stride) != (2, 2) or tuple(dilation) != (1, 1):
        return False
    if tuple(kernel_size) == (2, 2):
        return (
            tuple(padding) == (0, 0)
            and 2 * shape[2] <= input_size[2]
            and 2 * shape[3] <= input_size[3]
        )
    return tuple(kernel_size) == (3, 3) and shape[3] <= _C.max_pool2d_offsets_max_row


def max_pool2d_outputs(
    input: torch.Tensor,
    kernel_size,
    stride,
    padding,
    dilation,
    ceil_mode,
    return_indices,
    keep_offsets=False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The output and the second output: int64 indices when asked for; otherwise compact
    window offsets that the backward reads instead of the input, always on CUDA and on the
    CPU when ``keep_offsets`` and the geometry has them (``_keeps_offsets``); else an empty
    tensor (the backward recomputes each window's argmax)."""
    shape = pool2d_output_shape(input.shape, kernel_size, stride, padding, dilation, ceil_mode)
    if shape[2] < 1 or shape[3] < 1:  # checked here, where every route computes the shape
        raise ValueError(
            f"max_pool2d: the output would be empty ({shape[2]}x{shape[3]}) for input "
            f"{input.shape[2]}x{input.shape[3]} with kernel_size {kernel_size}, stride {stride}, "
            f"padding {padding}, dilation {dilation}"
        )
    channels_last = is_channels_last(input)
    fmt = memory_format(channels_last)
    out = empty(shape, input, fmt)
    if return_indices:
        return out, empty(shape, input, fmt, torch.int64)
    if input.is_cuda:
        return out, empty(shape, input, fmt, max_pool2d_offset_dtype(kernel_size))
    if (
        keep_offsets
        and not channels_last
        and _keeps_offsets(input.shape, kernel_size, stride, padding, dilation, shape)
    ):
        return out, empty(shape, input, fmt, torch.uint8)
    return out, empty((0,), input, torch.contiguous_format, torch.int64)
