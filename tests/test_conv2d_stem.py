"""Tests of the stem path of ``fastcnn.ops.conv2d``: stride-2 convolutions over at most 4
channels with 5 to 8 kernel columns (the ResNet stem) run forward as a 1-D Winograd F(5, 4)
along the output rows, per column parity.

Its accuracy is measured as the Winograd tests measure theirs, against a float64 convolution
of the same float32 inputs: ``max |y - y64| / max |y64|`` over one output tensor must stay
below 1e-5 (the documented guarantee). ``use_conv_algorithm("direct")`` runs the same
layers on the direct rows path, which the tests hold to the same reference.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _isa import ISAS, run_under_isa  # tests/_isa.py (pytest puts tests/ on sys.path)

import fastcnn
from fastcnn.ops import set_conv_algorithm, use_conv_algorithm

BOUND = 1e-5  # the documented relative error bound
FORMATS = (torch.contiguous_format, torch.channels_last)


def relative_error(y: torch.Tensor, y64: torch.Tensor) -> float:
    return ((y.double() - y64).abs().max() / y64.abs().max()).item()


# (N, C, K, H, W, R, S, stride, padding): the ResNet stem; 5, 6 and 8 kernel columns; 1 to 4
# channels; outputs narrower than one tile (5) and than one group of tiles (40), and wider
# than several groups; filters fewer than a panel (32) and across panels; vertical strides
# 1 to 3; no padding and padding wider than the kernel reaches.
SHAPES = [
    (1, 3, 64, 224, 224, 7, 7, 2, 3),
    (2, 3, 37, 23, 19, 7, 7, 2, 3),
    (1, 4, 33, 30, 91, 6, 8, (1, 2), (2, 1)),
    (3, 3, 8, 17, 9, 5, 6, (3, 2), 0),
    (1, 1, 70, 40, 170, 10, 7, 2, (4, 3)),
    (2, 3, 16, 11, 4, 7, 5, 2, (3, 6)),
    (1, 4, 5, 16, 83, 4, 8, 2, 1),
    (2, 2, 12, 15, 26, 7, 7, 2, 3),
]


@pytest.fixture(autouse=True)
def _auto():
    set_conv_algorithm("auto")
    yield
    set_conv_algorithm("auto")


def make(shape, fmt, scale=1.0):
    n, c, k, h, w, r, s, stride, padding = shape
    x = (torch.randn(n, c, h, w) * scale).contiguous(memory_format=fmt)
    wt = (torch.randn(k, c, r, s) / (r * s * c) ** 0.5).contiguous(memory_format=fmt)
    return x, wt, torch.randn(k) * 0.1, dict(stride=stride, padding=padding)


def conv64(x, wt, b, kw, relu):
    y = F.conv2d(x.double(), wt.double(), b.double(), **kw)
    return y.relu() if relu else y


@pytest.mark.parametrize("fmt", FORMATS, ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:7])))
def test_against_float64(shape, fmt):
    x, wt, b, kw = make(shape, fmt)
    for relu in (False, True):
        act = "relu" if relu else None
        y = fastcnn.ops.conv2d(x, wt, b, **kw, activation=act)
        assert y.stride() == F.conv2d(x, wt, b, **kw).stride()  # torch's output format
        assert relative_error(y, conv64(x, wt, b, kw, relu)) < BOUND
        with use_conv_algorithm("direct"):
            y_direct = fastcnn.ops.conv2d(x, wt, b, **kw, activation=act)
        assert relative_error(y_direct, conv64(x, wt, b, kw, relu)) < BOUND
        assert not torch.equal(y, y_direct)  # different rounding: the Winograd path ran


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
def test_realistic_magnitudes(scale):
    """Normalized images (all positive after a shift, so sums do not cancel) at several
    scales."""
    x, wt, b, kw = make(SHAPES[1], torch.contiguous_format, scale)
    x = x.abs()
    y = fastcnn.ops.conv2d(x, wt, b * scale, **kw)
    assert relative_error(y, conv64(x, wt, b * scale, kw, False)) < BOUND


def test_worst_of_many_random_inputs():
    worst = 0.0
    for seed in range(20):
        torch.manual_seed(seed)
        x, wt, b, kw = make((1, 3, 32, 20, 47, 7, 7, 2, 3), torch.channels_last)
        worst = max(
            worst, relative_error(fastcnn.ops.conv2d(x, wt, b, **kw), conv64(x, wt, b, kw, False))
        )
    assert worst < BOUND


def test_non_finite_inputs_stay_non_finite():
    """A NaN or an infinity reaches every output whose window holds it, as in direct
    summation (Winograd may spread it to the rest of its tile as NaN)."""
    x, wt, b, kw = make(SHAPES[1], torch.contiguous_format)
    x[0, 1, 9, 7] = float("nan")
    x[1, 0, 4, 12] = float("inf")
    for act in (None, "relu"):  # the fused ReLU keeps NaN, as torch.relu
        y = fastcnn.ops.conv2d(x, wt, b, **kw, activation=act)
        ref = F.conv2d(x, wt, b, **kw)
        ref = ref.relu() if act else ref
        assert (~torch.isfinite(y))[~torch.isfinite(ref)].all()
        assert torch.isfinite(y[0, :, :2]).all()  # rows whose windows miss it stay finite


def test_non_contiguous_input():
    """Columns two apart in memory (a sliced NCHW tensor) are gathered into the padded rows."""
    x, wt, b, kw = make((2, 3, 24, 21, 60, 7, 7, 2, 3), torch.contiguous_format)
    x = x[:, :, :, ::2]
    y = fastcnn.ops.conv2d(x, wt, b, **kw)
    assert relative_error(y, conv64(x, wt, b, kw, False)) < BOUND


@pytest.mark.parametrize(
    "shape",
    [
        (1, 3, 16, 20, 20, 7, 7, 1, 3),  # stride 1 across
        (1, 3, 16, 20, 20, 7, 4, 2, 3),  # 4 columns: one tap per phase too few
        (1, 3, 16, 20, 20, 3, 9, (2, 3), 3),  # stride 3 across
        (1, 8, 16, 20, 20, 7, 7, 2, 3),  # more than 4 channels
    ],
    ids=["stride1", "s4", "stride3", "c8"],
)
def test_other_shapes_stay_direct(shape):
    x, wt, b, kw = make(shape, torch.contiguous_format)
    y = fastcnn.ops.conv2d(x, wt, b, **kw)
    with use_conv_algorithm("direct"):
        assert torch.equal(y, fastcnn.ops.conv2d(x, wt, b, **kw))


def test_gradients_through_the_stem():
    """With the fused ReLU the backward masks by the Winograd output."""
    x, wt, b, kw = make(SHAPES[1], torch.channels_last)
    for t in (x, wt, b):
        t.requires_grad_()
    y = fastcnn.ops.conv2d(x, wt, b, **kw, activation="relu")
    go = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, wt, b), go)
    ref = F.relu(F.conv2d(x, wt, b, **kw))
    refs = torch.autograd.grad(ref, (x, wt, b), go)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
    for got, want in zip(grads, refs):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


_ISA_SCRIPT = """
import json, sys, torch, torch.nn.functional as F, fastcnn
torch.manual_seed(0)
for shape in json.loads(sys.argv[1]):
    n, c, k, h, w, r, s, stride, padding = shape
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(n, c, h, w).contiguous(memory_format=fmt)
        wt = torch.randn(k, c, r, s) / (r * s * c) ** 0.5
        b = torch.randn(k)
        y = fastcnn.ops.conv2d(x, wt, b, stride=stride, padding=padding, activation="relu")
        y64 = F.conv2d(x.double(), wt.double(), b.double(), stride=stride, padding=padding).relu()
        err = ((y.double() - y64).abs().max() / y64.abs().max()).item()
        assert err < 1e-5, (shape, fmt, err)
print(fastcnn.info()["isa"])
"""


@pytest.mark.parametrize("isa", ISAS)
def test_every_isa(isa):
    run_under_isa(isa, _ISA_SCRIPT, SHAPES[1:])
