"""Backward-weight through the dot-product path (NCHW, or channels_last that the outer-product
path leaves; positions per thread >= 4096): block edges (positions not a multiple of
the vector width, blocks crossing images, several blocks per slice), dY read in place, tails
in filters and columns, strides, dilation, asymmetric padding, groups, NaN/Inf, 1 and 2
threads, against torch in float64. Channels_last with more channels runs the outer-product
path, tested from OUTER_SHAPES on. The algorithm is forced direct: float32 3x3 stride-1 layers
with enough tiles would otherwise take the Winograd weight gradient, whose error is measured
over the whole tensor (test_conv2d_winograd_backward_weight.py)."""

from __future__ import annotations

import math

import pytest
import torch
from _isa import ISAS, run_under_isa  # tests/_isa.py (pytest puts tests/ on sys.path)

import fastcnn  # noqa: F401  (registers torch.ops.fastcnn)
from fastcnn.ops import use_conv_algorithm
from fastcnn.ops.conv2d import _weight_gradient_via_channels_last

DTYPES = [torch.float32, torch.float64]
CL = torch.channels_last


@pytest.fixture(autouse=True)
def _direct():
    with use_conv_algorithm("direct"):
        yield


# (N, C, K, H, W, R, S, stride, pad_begin, pad_end, dilation, groups)
SHAPES = {
    "tails": (10, 3, 7, 29, 29, 3, 3, 1, (1, 1), (1, 1), 1, 1),
    "1x1": (6, 13, 37, 40, 40, 1, 1, 1, (0, 0), (0, 0), 1, 1),
    "1x1_odd_plane": (9, 6, 10, 31, 33, 1, 1, 1, (0, 0), (0, 0), 1, 1),
    "one_channel": (16, 1, 33, 23, 25, 3, 3, 1, (1, 1), (1, 1), 1, 1),
    "strided_dilated": (17, 4, 6, 45, 43, 3, 2, 2, (2, 0), (1, 2), 2, 2),
    "dilated": (8, 5, 9, 40, 37, 3, 3, 1, (2, 1), (1, 2), 2, 1),
    "long_slices": (2, 8, 16, 100, 97, 5, 3, 1, (2, 1), (2, 1), 1, 1),
    # NCHW, positions per image a whole number of vectors and no more columns (c, r, s) than
    # filters: dY read in place, blocks ending at image edges; a filter tail of 1
    "grad_in_place": (24, 1, 21, 16, 24, 3, 3, 1, (1, 1), (1, 1), 1, 1),
    "grad_in_place_strided": (24, 2, 19, 32, 48, 3, 3, 2, (1, 0), (0, 1), 1, 1),
}


def _reference(dy, x, w_shape, stride, pad_begin, pad_end, dilation, groups):
    """torch's weight gradient in float64, with asymmetric padding applied to x up front."""
    xp = torch.nn.functional.pad(x.double(), (pad_begin[1], pad_end[1], pad_begin[0], pad_end[0]))
    w = torch.zeros(w_shape, dtype=torch.float64)
    return torch.ops.aten.convolution_backward(
        dy.double(),
        xp,
        w,
        None,
        [stride] * 2,
        [0, 0],
        [dilation] * 2,
        False,
        [0, 0],
        groups,
        [False, True, False],
    )[1]


def _case(name, dtype, specials=False, channels_last=False):
    N, C, K, H, W, R, S, stride, pb, pe, dil, groups = SHAPES[name]
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(N, C, H, W, generator=gen, dtype=dtype)
    w_shape = (K, C // groups, R, S)
    Ho = (H + pb[0] + pe[0] - dil * (R - 1) - 1) // stride + 1
    Wo = (W + pb[1] + pe[1] - dil * (S - 1) - 1) // stride + 1
    assert N * Ho * Wo >= 2 * 4096  # the dot-product path at 1 and 2 threads
    dy = torch.randn(N, K, Ho, Wo, generator=gen, dtype=dtype)
    if specials:
        x[1, 0, 3, 4], x[2, 0, 10, 0] = math.inf, math.nan
        dy[0, 2, 5, 5], dy[3, 1, 0, 0] = -math.inf, math.nan
    geometry = (channels_last, [stride] * 2, list(pb), list(pe), [dil] * 2, groups)
    if channels_last:
        x, dy = x.contiguous(memory_format=CL), dy.contiguous(memory_format=CL)
    return dy, x, w_shape, geometry, (stride, pb, pe, dil, groups)


def _run(dy, x, w_shape, geometry, threads):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        return torch.ops.fastcnn.conv2d_backward_weight(dy, x, list(w_shape), *geometry)
    finally:
        torch.set_num_threads(before)


def _check_against_reference(dy, x, w_shape, geometry, ref_args, threads):
    """Close to the float64 reference (tolerance from the reduction length), and the same bits
    on a second run at the same thread count."""
    got = _run(dy, x, w_shape, geometry, threads)
    want = _reference(dy, x, w_shape, *ref_args)
    red = dy.shape[0] * dy.shape[2] * dy.shape[3]
    tol = {"rtol": 1e-4, "atol": 1e-5 * math.sqrt(red)} if dy.dtype == torch.float32 else {}
    torch.testing.assert_close(got.double(), want, **tol)
    assert torch.equal(got, _run(dy, x, w_shape, geometry, threads))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(SHAPES))
def test_against_torch(name, dtype, threads, channels_last):
    dy, x, w_shape, geometry, ref_args = _case(name, dtype, channels_last=channels_last)
    _check_against_reference(dy, x, w_shape, geometry, ref_args, threads)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ["tails", "strided_dilated", "dilated"])
def test_special_values_where_torch_has_them(name, dtype, channels_last):
    dy, x, w_shape, geometry, ref_args = _case(name, dtype, True, channels_last)
    got = _run(dy, x, w_shape, geometry, 2)
    want = _reference(dy, x, w_shape, *ref_args)
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got.isinf() & (got > 0), want.isinf() & (want > 0))
    assert torch.equal(got.isinf() & (got < 0), want.isinf() & (want < 0))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "shape",
    [(3, 40, 36, 14, 15), (1, 33, 32, 41, 60), (16, 32, 33, 8, 8), (70, 32, 32, 4, 4)],
    ids=["14_wide", "60_wide", "8x8", "4x4"],
)
def test_nchw_through_channels_last_copies(shape, threads):
    """NCHW layers whose weight gradient runs on channels_last copies of dY and X (rows 12 or
    more wide, or shorter rows with >= 1024 positions; >= 32 channels and filters) give the
    reference's gradient too."""
    n, c, k, h, w = shape
    gen = torch.Generator().manual_seed(3)
    x, dy = torch.randn(n, c, h, w, generator=gen), torch.randn(n, k, h, w, generator=gen)
    w_shape, ref_args = (k, c, 3, 3), (1, (1, 1), (1, 1), 1, 1)
    assert _weight_gradient_via_channels_last(dy, x, w_shape, 1)
    geometry = (False, [1, 1], [1, 1], [1, 1], [1, 1], 1)
    _check_against_reference(dy, x, w_shape, geometry, ref_args, threads)


# --------------------------------------------------------------------------------------------
# Channels-innermost operands with >= 8 channels per group, or a stem whose filter row of
# (tap, channel) pairs is >= 8 long, and output rows >= 12 wide (every shape here): outer
# products read in place
# (conv2d_backward_weight_nhwc.h). Vectors run along filters or channels, whichever wastes fewer
# lanes; the other axis is broadcast in tiles (14 with AVX-512, 6 otherwise).
# --------------------------------------------------------------------------------------------

# (N, C, K, H, W, R, S, stride, pad_begin, pad_end, dilation, groups)
OUTER_SHAPES = {
    # filters: 2 vectors + 5 one at a time; channels: 14 + 5 broadcast
    "tails": (3, 19, 37, 11, 13, 3, 3, 1, (1, 1), (1, 1), 1, 1),
    # vectors along the 40 channels (2 vectors + 8 single lanes), 9 filters broadcast
    "vector_channels": (2, 40, 9, 9, 14, 3, 3, 1, (1, 1), (1, 1), 1, 1),
    "wide": (2, 33, 70, 8, 14, 3, 3, 1, (0, 1), (2, 0), 1, 1),
    "1x1": (5, 24, 40, 7, 13, 1, 1, 1, (0, 0), (0, 0), 1, 1),  # rows merge across images
    "1x1_strided": (3, 16, 20, 9, 25, 1, 1, 2, (0, 0), (0, 0), 1, 1),
    "strided_dilated_groups": (4, 24, 18, 17, 27, 3, 2, 2, (2, 0), (1, 2), 2, 2),
    "asymmetric_padding": (2, 8, 16, 12, 13, 5, 3, 1, (3, 0), (0, 2), 1, 1),
    "many_blocks": (9, 8, 8, 10, 12, 3, 3, 1, (1, 1), (1, 1), 1, 1),  # 90 rows, 43 a block
    # 4 panels of 32 floats (AVX-512), tiles >= 1 MB: two threads take 2 panels each, no
    # partial sums; a tail panel
    "parts_filters": (2, 40, 100, 9, 14, 9, 9, 1, (4, 4), (4, 4), 1, 1),
    "parts_channels": (2, 100, 40, 8, 13, 9, 9, 1, (4, 3), (3, 4), 1, 1),
    # fewer than 8 channels: a filter row's taps merged into one broadcast run (21, 10)
    "stem": (2, 3, 20, 30, 31, 7, 7, 2, (3, 3), (3, 3), 1, 1),
    "stem_asymmetric": (3, 2, 9, 17, 19, 5, 5, 1, (0, 4), (3, 1), 1, 1),
    "padding_only_tap": (2, 8, 8, 9, 3, 3, 3, 1, (1, 5), (1, 12), 4, 1),  # tap s=2: all padding
    # rows under 12 wide, with >= 1024 positions: runs restart at the padding every few taps
    "short_rows": (64, 16, 24, 8, 8, 3, 3, 1, (1, 1), (1, 1), 1, 1),
    "shortest_rows": (70, 9, 20, 4, 5, 3, 3, 1, (1, 1), (1, 1), 1, 1),
}


def _outer_case(name, dtype, specials=False):
    N, C, K, H, W, R, S, stride, pb, pe, dil, groups = OUTER_SHAPES[name]
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(N, C, H, W, generator=gen, dtype=dtype)
    Ho = (H + pb[0] + pe[0] - dil * (R - 1) - 1) // stride + 1
    Wo = (W + pb[1] + pe[1] - dil * (S - 1) - 1) // stride + 1
    merged = groups == 1 and dil == 1 and C * S >= 8
    rows = Wo >= 12 or (Wo >= 4 and N * Ho * Wo >= 1024)
    assert rows and (C // groups >= 8 or merged)  # the outer-product path
    dy = torch.randn(N, K, Ho, Wo, generator=gen, dtype=dtype)
    if specials:  # a corner and an interior position of dY, a pixel of x
        dy[0, 1, 0, 0], dy[-1, -1, Ho // 2, Wo // 2] = math.inf, math.nan
        dy[-1, 0, Ho - 1, Wo - 1] = -math.inf
        x[0, -1, H // 2, W // 2] = math.inf
    x, dy = x.contiguous(memory_format=CL), dy.contiguous(memory_format=CL)
    geometry = (True, [stride] * 2, list(pb), list(pe), [dil] * 2, groups)
    return dy, x, (K, C // groups, R, S), geometry, (stride, pb, pe, dil, groups)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(OUTER_SHAPES))
def test_channels_last_outer_against_torch(name, dtype, threads):
    dy, x, w_shape, geometry, ref_args = _outer_case(name, dtype)
    _check_against_reference(dy, x, w_shape, geometry, ref_args, threads)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "name",
    [
        "tails",
        "vector_channels",
        "asymmetric_padding",
        "stem",
        "parts_filters",
        "parts_channels",
        "shortest_rows",
    ],
)
def test_channels_last_outer_special_values(name, dtype):
    """Inf or NaN in dY where a tap reads padding gives NaN there (Inf * 0), as the padded
    product does; the kernel skips those products and sets them apart."""
    dy, x, w_shape, geometry, ref_args = _outer_case(name, dtype, specials=True)
    got = _run(dy, x, w_shape, geometry, 2)
    want = _reference(dy, x, w_shape, *ref_args)
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got.isinf() & (got > 0), want.isinf() & (want > 0))
    assert torch.equal(got.isinf() & (got < 0), want.isinf() & (want < 0))


# Every ISA's outer-product kernel (vector widths and broadcast tiles differ) in a fresh
# interpreter with FASTCNN_ISA set, against torch in float64.
_OUTER_ISA_SCRIPT = r"""
import json, sys, torch, fastcnn
for dtype in (torch.float32, torch.float64):
    for N, C, K, H, W, R, S, st, pb, pe, dil, groups in json.loads(sys.argv[1]):
        gen = torch.Generator().manual_seed(3)
        x = torch.randn(N, C, H, W, generator=gen, dtype=dtype)
        Ho = (H + pb[0] + pe[0] - dil * (R - 1) - 1) // st + 1
        Wo = (W + pb[1] + pe[1] - dil * (S - 1) - 1) // st + 1
        dy = torch.randn(N, K, Ho, Wo, generator=gen, dtype=dtype)
        x, dy = (t.contiguous(memory_format=torch.channels_last) for t in (x, dy))
        w_shape = [K, C // groups, R, S]
        got = torch.ops.fastcnn.conv2d_backward_weight(
            dy, x, w_shape, True, [st] * 2, pb, pe, [dil] * 2, groups)
        xp = torch.nn.functional.pad(x.double(), (pb[1], pe[1], pb[0], pe[0]))
        want = torch.ops.aten.convolution_backward(
            dy.double(), xp, torch.zeros(w_shape, dtype=torch.float64), None, [st] * 2, [0, 0],
            [dil] * 2, False, [0, 0], groups, [False, True, False])[1]
        tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else {}
        torch.testing.assert_close(got.double(), want, **tol)
print(fastcnn.info()["isa"])
"""


@pytest.mark.parametrize("isa", ISAS)
def test_channels_last_outer_every_isa(isa):
    names = ["tails", "vector_channels", "wide", "1x1", "strided_dilated_groups", "stem"]
    names += ["parts_filters", "parts_channels"]
    run_under_isa(isa, _OUTER_ISA_SCRIPT, [OUTER_SHAPES[n] for n in names])
