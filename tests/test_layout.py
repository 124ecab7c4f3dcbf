"""fastcnn's NCHW -> NHWC copy (the channels_last operands of the NCHW weight gradient,
conv2d.py) against torch's, exactly: 8x8 transposes with channel and position tails, tasks
that split an image, both dtypes and thread counts; and its argument checks."""

from __future__ import annotations

import pytest
import torch
from torch.utils.dlpack import to_dlpack

from fastcnn import _C
from fastcnn.ops.conv2d import _channels_last_copy

CL = torch.channels_last

SHAPES = [
    (2, 16, 8, 8),  # whole 8x8 blocks only
    (3, 13, 7, 9),  # channel and position tails
    (1, 40, 14, 15),
    (2, 300, 33, 35),  # several tasks per image (216 positions each), a 4-channel tail
    (2, 8, 1, 1),  # one position: NCHW and NHWC are the same memory
    (4, 1, 5, 6),  # one channel: likewise
    (0, 3, 4, 4),
]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_torch(shape, dtype, threads):
    x = torch.randn(shape, dtype=dtype)
    out = torch.full_like(x, float("nan"), memory_format=CL)  # an unwritten element stays NaN
    _C.nchw_to_nhwc(to_dlpack(x), to_dlpack(out), threads)
    assert out.is_contiguous(memory_format=CL)
    assert torch.equal(out, x)


def test_copy_helper_takes_any_layout():
    x = torch.randn(3, 24, 10, 22)
    sliced = x[:, :, :, ::2]  # not dense: goes through a contiguous copy first
    assert torch.equal(_channels_last_copy(sliced), sliced)
    assert _channels_last_copy(sliced).is_contiguous(memory_format=CL)
    already = x.contiguous(memory_format=CL)
    assert _channels_last_copy(already) is already


@pytest.mark.parametrize(
    "x, out, match",
    [
        (
            torch.randn(2, 3, 4, 5).contiguous(memory_format=CL),
            torch.empty(2, 3, 4, 5, memory_format=CL),
            "input must be contiguous \\(NCHW\\), got shape",
        ),
        (torch.randn(2, 3, 4, 5), torch.empty(2, 3, 4, 5), "output must be channels_last, got"),
        (
            torch.randn(2, 3, 4, 5),
            torch.empty(2, 3, 5, 4, memory_format=CL),
            "output must have shape \\(2, 3, 4, 5\\), got",
        ),
        (torch.randn(3, 4, 5), torch.empty(3, 4, 5), "input must be 4-D"),
    ],
)
def test_errors(x, out, match):
    with pytest.raises(ValueError, match=f"nchw_to_nhwc: {match}"):
        _C.nchw_to_nhwc(to_dlpack(x), to_dlpack(out), 1)


def test_dtype_and_threads_checks():
    x = torch.randn(2, 3, 4, 5)
    with pytest.raises(TypeError, match="nchw_to_nhwc: output must have dtype float32"):
        _C.nchw_to_nhwc(to_dlpack(x), to_dlpack(torch.empty_like(x, memory_format=CL).double()), 1)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        _C.nchw_to_nhwc(to_dlpack(x), to_dlpack(torch.empty_like(x, memory_format=CL)), 0)
