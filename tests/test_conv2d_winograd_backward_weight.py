"""Tests of the Winograd F(4x4, 3x3) weight gradient: float32 3x3 stride-1 layers with >= 8
channels and filters and >= 128 output tiles of 4x4, channels_last operands (NCHW ones with
>= 32 channels and filters run on channels_last copies), and of the switch that forces direct
summation.

Its accuracy is measured as the forward's is (test_conv2d_winograd.py): ``max |dw - dw64| /
max |dw64|`` over one weight gradient, against float64 of the same float32 inputs, must stay
below 1e-4. Inf and NaN in dY or X fall back to direct summation (the outer-product kernel),
whose results they must then equal bit for bit.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _isa import ISAS, run_under_isa  # tests/_isa.py (pytest puts tests/ on sys.path)

import fastcnn  # noqa: F401  (registers torch.ops.fastcnn)
from fastcnn.ops import use_conv_algorithm
from fastcnn.ops.conv2d import _weight_gradient_via_channels_last

BOUND = 1e-4  # the documented relative error bound
CL = torch.channels_last

# (N, C, K, H, W, padding), each with >= 128 tiles: outputs not a whole number of tiles (and
# padding 0 and 2, so tiles read padding on every side), channels and filters that are not
# multiples of a vector (8 or 16 lanes) or of the outer-product kernel's panel, a batch of small
# images whose tiles cross images within a block, groups of 32 tiles with a short last one
# (132 tiles), a block of 2304 tiles in 64 groups of 36, and blocks: the last two shapes'
# tiles hold 36 x 1008 floats, so their 300 tiles go in 3 blocks of 100, the sums carried
# across.
SHAPES = [
    (2, 16, 16, 30, 30, 1),
    (1, 17, 37, 50, 46, 0),
    (1, 9, 70, 46, 47, 2),
    (130, 24, 8, 4, 5, 1),
    (3, 33, 48, 29, 31, 1),
    (4, 8, 8, 96, 96, 1),
    (3, 1000, 8, 40, 40, 1),
    (3, 8, 1000, 40, 40, 1),
]


def _ids(shape):
    return "x".join(map(str, shape))


def _case(shape, fmt=CL, seed=0):
    n, c, k, h, w, pad = shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen).contiguous(memory_format=fmt)
    ho, wo = h + 2 * pad - 2, w + 2 * pad - 2
    assert n * math.ceil(ho / 4) * math.ceil(wo / 4) >= 128  # Winograd's tile count
    dy = torch.randn(n, k, ho, wo, generator=gen).contiguous(memory_format=fmt)
    return dy, x, (k, c, 3, 3), pad


def _weight_grad(dy, x, w_shape, pad):
    channels_last = x.is_contiguous(memory_format=CL) and not x.is_contiguous()
    return torch.ops.fastcnn.conv2d_backward_weight(
        dy, x, list(w_shape), channels_last, [1, 1], [pad] * 2, [pad] * 2, [1, 1], 1
    )


def _float64(dy, x, w_shape, pad):
    w = torch.zeros(w_shape, dtype=torch.float64)
    args = ([1, 1], [pad] * 2, [1, 1], False, [0, 0], 1, [False, True, False])
    return torch.ops.aten.convolution_backward(dy.double(), x.double(), w, None, *args)[1]


def _relative_error(dw, dw64):
    return ((dw.double() - dw64).abs().max() / dw64.abs().max()).item()


def _direct(dy, x, w_shape, pad):
    with use_conv_algorithm("direct"):
        return _weight_grad(dy, x, w_shape, pad)


@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_against_float64(shape):
    dy, x, w_shape, pad = _case(shape)
    dw = _weight_grad(dy, x, w_shape, pad)
    assert dw.is_contiguous(memory_format=CL)
    assert _relative_error(dw, _float64(dy, x, w_shape, pad)) < BOUND
    assert not torch.equal(dw, _direct(dy, x, w_shape, pad))  # different rounding: Winograd ran


@pytest.mark.parametrize("shape", [(1, 33, 32, 41, 60, 1), (2, 40, 36, 34, 35, 0)], ids=_ids)
def test_nchw_through_channels_last_copies(shape):
    dy, x, w_shape, pad = _case(shape, torch.contiguous_format)
    assert _weight_gradient_via_channels_last(dy, x, w_shape, 1)
    dw = _weight_grad(dy, x, w_shape, pad)
    assert dw.is_contiguous()
    assert _relative_error(dw, _float64(dy, x, w_shape, pad)) < BOUND
    assert not torch.equal(dw, _direct(dy, x, w_shape, pad))


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
def test_realistic_magnitudes(scale):
    """Post-ReLU activations (non-negative: their products do not cancel) at several scales
    against a gradient of unit scale, a deep layer (128 channels, 64 filters)."""
    dy, x, w_shape, pad = _case((4, 128, 64, 28, 28, 1))
    x = (x.relu() * scale).contiguous(memory_format=CL)
    dw = _weight_grad(dy, x, w_shape, pad)
    assert _relative_error(dw, _float64(dy, x, w_shape, pad)) < BOUND


def test_worst_of_many_random_inputs():
    worst = 0.0
    for seed in range(20):
        dy, x, w_shape, pad = _case((2, 32, 32, 32, 32, 1), seed=seed)
        dw = _weight_grad(dy, x, w_shape, pad)
        worst = max(worst, _relative_error(dw, _float64(dy, x, w_shape, pad)))
    assert worst < BOUND


@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[6]], ids=_ids)
def test_same_bits_at_every_thread_count(shape):
    """Each point's sums are one thread's, in tile order, whatever the thread count."""
    dy, x, w_shape, pad = _case(shape)
    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2, 3, 5):
            torch.set_num_threads(threads)
            runs.append(_weight_grad(dy, x, w_shape, pad))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(runs[0], r) for r in runs[1:])


@pytest.mark.parametrize("where", ["x", "dy", "x_last_block"])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_inputs_fall_back_to_direct(where, value):
    """Winograd's transforms mix a tile's values, and its padding's zeros, that direct
    summation keeps apart: Inf or NaN anywhere in dY or X gives direct summation's result."""
    dy, x, w_shape, pad = _case(SHAPES[6] if where == "x_last_block" else SHAPES[0])
    if where == "dy":
        dy[1, 3, 7, 12] = value
    else:
        x[-1, 2, -1, -1] = value  # the last tile (of the last block)
    dw = _weight_grad(dy, x, w_shape, pad)
    assert not torch.isfinite(dw).all()
    torch.testing.assert_close(dw, _direct(dy, x, w_shape, pad), rtol=0, atol=0, equal_nan=True)


def test_training_magnitudes():
    """A training step's operands: gradients spread over 1e-14 to 1e-4, activations with
    exact zeros and values down to 1e-9. The transforms' differences of such values multiply
    into denormals, which the path flushes to zero; the bound still holds."""
    dy, x, w_shape, pad = _case((4, 32, 32, 32, 32, 1))
    gen = torch.Generator().manual_seed(2)
    dy = dy * 10 ** (torch.rand(dy.shape, generator=gen) * 10 - 14)
    x = x.relu() * 10 ** (torch.rand(x.shape, generator=gen) * 9 - 9)
    dy, x = (t.contiguous(memory_format=CL) for t in (dy, x))
    dw = _weight_grad(dy, x, w_shape, pad)
    assert _relative_error(dw, _float64(dy, x, w_shape, pad)) < BOUND
    assert not torch.equal(dw, _direct(dy, x, w_shape, pad))


@pytest.mark.parametrize("which", ["dy", "x"])
def test_tiny_magnitudes_sum_directly(which):
    """Below 2^-40 in dY or X, flushing denormals would matter: direct summation's bits."""
    dy, x, w_shape, pad = _case(SHAPES[0])
    if which == "dy":
        dy = dy / dy.abs().max() * 2.0**-41
    else:
        x = x / x.abs().max() * 2.0**-41
    dw = _weight_grad(dy, x, w_shape, pad)
    assert torch.equal(dw, _direct(dy, x, w_shape, pad))
    assert _relative_error(dw, _float64(dy, x, w_shape, pad)) < 1e-5


def test_leaves_denormals_on():
    """The path flushes denormals only inside its own work: afterwards torch's arithmetic,
    in this thread and in the worker threads, keeps them."""
    dy, x, w_shape, pad = _case(SHAPES[0])
    _weight_grad(dy, x, w_shape, pad)
    tiny = torch.full((1 << 20,), 1e-39)
    assert (tiny * 1.0 == tiny).all() and (tiny != 0).all()
    assert (torch.tensor([1e-39]) * 1.0).item() != 0


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((2, 16, 16, 40, 40), dict(dtype=torch.float64)),
        ((2, 7, 16, 40, 40), {}),  # too few channels
        ((2, 16, 7, 40, 40), {}),  # too few filters
        ((1, 16, 16, 40, 44), {}),  # 110 tiles
        ((2, 16, 16, 40, 40), dict(stride=2)),
        ((2, 16, 16, 40, 40), dict(dilation=2)),
        ((2, 16, 16, 40, 40), dict(groups=2)),
    ],
    ids=["float64", "c7", "k7", "110_tiles", "stride2", "dilation2", "groups2"],
)
def test_other_layers_stay_direct(shape, kwargs):
    n, c, k, h, w = shape
    dtype = kwargs.pop("dtype", torch.float32)
    groups = kwargs.get("groups", 1)
    x = torch.randn(n, c, h, w, dtype=dtype).contiguous(memory_format=CL).requires_grad_()
    wt = torch.randn(k, c // groups, 3, 3, dtype=dtype).contiguous(memory_format=CL)
    wt.requires_grad_()
    y = fastcnn.ops.conv2d(x, wt, padding=kwargs.get("dilation", 1), **kwargs)
    go = torch.randn_like(y)
    (dw,) = torch.autograd.grad(y, wt, go)
    with use_conv_algorithm("direct"):
        y = fastcnn.ops.conv2d(x, wt, padding=kwargs.get("dilation", 1), **kwargs)
        (dw_direct,) = torch.autograd.grad(y, wt, go)
    assert torch.equal(dw, dw_direct)


def test_through_autograd_matches_torch():
    """A training step's weight gradient through fastcnn.ops.conv2d with the fused ReLU takes
    the Winograd path. The reference masks by fastcnn's own output: float64 would flip the
    outputs nearest zero."""
    x = torch.randn(4, 32, 24, 24).contiguous(memory_format=CL)
    wt = (torch.randn(48, 32, 3, 3) / 17).contiguous(memory_format=CL).requires_grad_()
    b = torch.randn(48, requires_grad=True)
    go = torch.randn(4, 48, 24, 24).contiguous(memory_format=CL)
    y = fastcnn.ops.conv2d(x, wt, b, padding=1, activation="relu")
    dw, db = torch.autograd.grad(y, (wt, b), go)
    w64, b64 = (t.detach().double().requires_grad_() for t in (wt, b))
    ref = F.conv2d(x.double(), w64, b64, padding=1)
    dw64, db64 = torch.autograd.grad(ref, (w64, b64), go.double() * (y > 0))
    assert _relative_error(dw, dw64) < BOUND
    torch.testing.assert_close(db.double(), db64, rtol=1e-5, atol=1e-4)


# Every ISA's transforms in a fresh interpreter with FASTCNN_ISA set: the bound, and rounding
# that differs from direct summation's.
_ISA_SCRIPT = r"""
import json, sys, torch, fastcnn
from fastcnn.ops import use_conv_algorithm
for n, c, k, h, w, pad in json.loads(sys.argv[1]):
    gen = torch.Generator().manual_seed(5)
    cl = torch.channels_last
    x = torch.randn(n, c, h, w, generator=gen).contiguous(memory_format=cl)
    dy = torch.randn(n, k, h + 2 * pad - 2, w + 2 * pad - 2, generator=gen)
    dy = dy.contiguous(memory_format=cl)
    args = (dy, x, [k, c, 3, 3], True, [1, 1], [pad] * 2, [pad] * 2, [1, 1], 1)
    dw = torch.ops.fastcnn.conv2d_backward_weight(*args)
    with use_conv_algorithm("direct"):
        assert not torch.equal(dw, torch.ops.fastcnn.conv2d_backward_weight(*args))
    dw64 = torch.ops.aten.convolution_backward(
        dy.double(), x.double(), torch.zeros(k, c, 3, 3, dtype=torch.float64), None, [1, 1],
        [pad] * 2, [1, 1], False, [0, 0], 1, [False, True, False])[1]
    err = ((dw.double() - dw64).abs().max() / dw64.abs().max()).item()
    assert err < 1e-4, (n, c, k, h, w, pad, err)
print(fastcnn.info()["isa"])
"""


@pytest.mark.parametrize("isa", ISAS)
def test_every_isa(isa):
    run_under_isa(isa, _ISA_SCRIPT, [SHAPES[i] for i in (0, 1, 2, 3, 7)])
