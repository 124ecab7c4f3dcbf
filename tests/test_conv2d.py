"""Tests of ``fastcnn.ops.conv2d`` and its backward ops ``torch.ops.fastcnn.conv2d_backward_*``.

Every value is checked against two independent definitions: the pure-PyTorch reference
(``fastcnn.ops._reference.conv2d``) and ``torch.nn.functional.conv2d``; gradients through
autograd on both sides. One tester class per concern, parametrized over dtype, memory format
and contiguity, as torchvision's op tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from _isa import ISAS, run_under_isa  # tests/_isa.py (pytest puts tests/ on sys.path)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch.utils.dlpack import to_dlpack

import fastcnn
from fastcnn import _C
from fastcnn.ops import _reference

CL = torch.channels_last
DTYPES = [torch.float32, torch.float64]


# --------------------------------------------------------------------------------------------
# Geometry cases and tensor construction
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    N: int = 2
    C: int = 3
    K: int = 4
    H: int = 7
    W: int = 6
    R: int = 3
    S: int = 3
    stride: object = 1
    padding: object = 0
    dilation: object = 1
    groups: int = 1

    def kwargs(self) -> dict:
        return dict(
            stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups
        )


GEOMETRIES = {
    "basic": Geometry(),
    "stride2": Geometry(stride=2),
    "stride_pair": Geometry(H=9, stride=(3, 1)),
    "stride_gt_kernel": Geometry(H=8, W=9, R=1, S=2, stride=3),
    "pad1": Geometry(padding=1),
    "pad_pair": Geometry(padding=(2, 0)),
    "pad_list": Geometry(padding=[0, 2]),
    "pad_gt_kernel": Geometry(H=4, W=5, R=2, S=1, padding=3),
    "same_odd": Geometry(R=3, S=5, padding="same"),
    "same_even": Geometry(R=4, S=2, padding="same"),
    "same_dilated_even": Geometry(H=9, W=8, R=2, S=4, dilation=(2, 3), padding="same"),
    "valid": Geometry(R=2, S=4, padding="valid"),
    "dilation2": Geometry(H=9, W=8, dilation=2, padding=2),
    "dilation_pair_stride": Geometry(H=10, W=9, dilation=(1, 3), stride=(2, 1), padding=(1, 3)),
    "groups2": Geometry(C=4, K=6, groups=2, padding=1),
    "groups3_stride": Geometry(C=6, K=9, groups=3, stride=2, padding=(0, 1)),
    "depthwise": Geometry(C=5, K=5, groups=5, padding=1),
    "depthwise_mult2": Geometry(C=4, K=8, groups=4, padding=1, stride=2),
    "depthwise_wide_C": Geometry(C=40, K=40, groups=40, H=6, W=7, padding=1),
    "depthwise_mult3_dilated": Geometry(
        C=3, K=9, groups=3, H=9, W=8, R=2, dilation=(2, 1), stride=(1, 2), padding=(1, 0)
    ),
    "depthwise_same_even": Geometry(C=4, K=4, groups=4, R=4, S=2, padding="same"),
    "depthwise_kernel_eq_padded": Geometry(C=6, K=6, groups=6, H=5, W=6, R=7, S=8, padding=1),
    "depthwise_one_row": Geometry(N=1, C=8, K=8, groups=8, H=1, W=17, R=1, padding=(0, 1)),
    "depthwise_1x1_stride": Geometry(C=5, K=10, groups=5, R=1, S=1, stride=2),
    "single_in_channel_5x5": Geometry(C=1, K=6, H=12, W=10, R=5, S=5, padding=2, stride=2),
    "conv1x1": Geometry(C=16, K=24, R=1, S=1),
    "conv1x1_stride2": Geometry(C=8, K=12, R=1, S=1, stride=2),
    "kernel_eq_padded_input": Geometry(H=5, W=4, R=7, S=6, padding=1),
    "kernel_eq_input": Geometry(H=3, W=5, R=3, S=5),
    "rect_kernel": Geometry(H=9, W=5, R=2, S=4),
    "single_channel": Geometry(C=1, K=1),
    "single_in_channel": Geometry(C=1, K=3),
    "single_pixel": Geometry(H=1, W=1, R=1, S=1, C=5, K=3),
    "K_odd_N1": Geometry(N=1, C=7, K=37, H=6, W=5, padding=1),
    "C300": Geometry(N=2, C=300, K=20, H=6, W=5, padding=1),
    "C300_1x1": Geometry(N=1, C=300, K=33, H=5, W=7, R=1, S=1),
    "many_columns": Geometry(N=1, C=3, K=5, H=26, W=27),
    "groups_large_K": Geometry(N=1, C=6, K=66, H=5, W=5, groups=3, padding=1),
    # Stride 1 with at least 8 channels: backward-input runs as a forward convolution of the
    # output gradient with flipped filters (asymmetric, dilated, zero and too-wide padding).
    "wide_same_even": Geometry(C=9, K=5, R=4, S=2, padding="same"),
    "wide_dilated": Geometry(C=12, K=7, H=9, W=8, dilation=(2, 3), padding=(2, 1)),
    "wide_valid_rect": Geometry(C=10, K=6, R=2, S=4, padding="valid"),
    "wide_pad_gt_span": Geometry(C=8, K=4, H=4, W=5, R=2, S=1, padding=(1, 3)),
    # Strided with at least 8 channels: backward-input runs phase by phase, each a forward
    # convolution of the output gradient with a flipped sub-filter (odd sizes, phases that
    # skip the gradient's first row or column, phases no tap reaches, strides 2 to 4, and
    # stride 5, beyond the phases' limit).
    "phases_odd": Geometry(C=9, K=7, H=9, W=8, stride=2, padding=1),
    "phases_skip": Geometry(C=8, K=5, H=7, W=6, stride=2, padding=2),
    "phases_1x1_padded": Geometry(C=8, K=6, H=7, W=6, R=1, S=1, stride=2, padding=1),
    "phases_untouched": Geometry(C=8, K=5, H=8, W=10, R=2, S=2, stride=3),
    "phases_rect": Geometry(C=10, K=6, H=11, W=9, R=5, S=3, stride=(4, 2), padding=(2, 1)),
    "stride5_wide": Geometry(C=8, K=4, H=11, W=12, stride=5, padding=1),
    # 7x7 stride 2: phases of 4x4 to 3x3 taps (float32's 3x3 phase on Winograd), few filters
    "phases_7x7": Geometry(C=8, K=9, H=15, W=13, R=7, S=7, stride=2, padding=3),
    "phases_7x7_few_filters": Geometry(C=8, K=3, H=15, W=13, R=7, S=7, stride=2, padding=3),
    # At most 4 channels and at least 64 taps: the stem's rows path (float32).
    "stem_rows": Geometry(C=3, K=37, H=23, W=19, R=7, S=7, stride=2, padding=3),
    "stem_rows_rect": Geometry(C=4, K=5, H=9, W=14, R=5, S=4, stride=(1, 2), padding=(2, 1)),
    "stem_rows_wide_pad": Geometry(N=1, C=2, K=33, H=8, W=6, R=6, S=6, padding=(4, 5)),
}

# (input layout, weight layout); bias is contiguous except in the non-contiguous layouts.
LAYOUTS = {
    "contiguous": ("contiguous", "contiguous"),
    "channels_last": ("channels_last", "channels_last"),
    "x_cl-w_contig": ("channels_last", "contiguous"),
    "x_contig-w_cl": ("contiguous", "channels_last"),
    "sliced-permuted": ("sliced", "permuted"),
    "transposed-sliced": ("transposed", "sliced"),
}

# Bias without ReLU is covered by the other tests (and by the fuzzing below).
EPILOGUES = {"none": (False, None), "bias_relu": (True, "relu")}


def _make(shape, dtype, layout="contiguous", requires_grad=True) -> torch.Tensor:
    """A random leaf tensor of ``shape`` with the strides ``layout`` describes."""
    shape = tuple(shape)
    if layout == "contiguous":
        t = torch.randn(shape, dtype=dtype)
    elif layout == "channels_last":
        t = torch.randn(shape, dtype=dtype).to(memory_format=CL)
    elif layout == "sliced" and len(shape) == 1:  # every other element, from an offset
        t = torch.randn(2 * shape[0] + 1, dtype=dtype)[1::2]
    elif layout == "sliced":  # every other element of the last dim, and an offset first dim
        big = torch.randn((shape[0] + 1, *shape[1:-1], 2 * shape[-1]), dtype=dtype)
        t = big[1:, ..., ::2]
    elif layout == "transposed":  # the last two dims swapped in memory
        t = torch.randn((*shape[:-2], shape[-1], shape[-2]), dtype=dtype).transpose(-1, -2)
    elif layout == "permuted":  # [R, S, K, C] memory seen as [K, C, R, S]
        t = torch.randn((shape[2], shape[3], shape[0], shape[1]), dtype=dtype).permute(2, 3, 0, 1)
    elif layout == "cl_gaps":  # channels innermost, but every other channel: strided NHWC
        n, c, h, w = shape
        t = torch.randn((n, h, w, 2 * c), dtype=dtype)[..., ::2].permute(0, 3, 1, 2)
    else:
        raise AssertionError(layout)
    assert t.shape == shape
    return t.detach().requires_grad_(requires_grad)


def _is_cl(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=CL)


def _assert_same_format(out, want):
    assert (_is_cl(out), out.is_contiguous()) == (_is_cl(want), want.is_contiguous()), (
        f"fastcnn strides {out.stride()}, torch strides {want.stride()}"
    )


def _tol(dtype, reduction: int) -> dict:
    """Tolerances for sums of ``reduction`` products of O(1) random values."""
    reduction = max(int(reduction), 1)
    if dtype == torch.float64:
        return dict(rtol=1e-10, atol=1e-12 * reduction)
    return dict(rtol=1e-5, atol=1e-5 + 1e-6 * reduction)


def _torch_conv(x, w, b, activation=None, **kwargs):
    # Contiguous copies of the same values: torch's own slow CPU path rejects some layouts of
    # its gradient buffers ("slow_conv2d: grad_weight must be contiguous" for a permuted 1x2
    # weight with padding='same'), a fuzz run once crashed inside torch's convolution of a
    # sliced or permuted layout, and the layouts under test here are fastcnn's.
    out = F.conv2d(x.contiguous(), w.contiguous(), b, **kwargs)
    return F.relu(out) if activation == "relu" else out


def _reference_conv(x, w, b, activation=None, **kwargs):
    if x.dim() == 3:
        return _reference.conv2d(x.unsqueeze(0), w, b, activation=activation, **kwargs).squeeze(0)
    return _reference.conv2d(x, w, b, activation=activation, **kwargs)


def _grad_output(x, w, b, activation, kwargs):
    """A random upstream gradient; with ReLU it is zeroed where the pre-activation is so close
    to 0 that rounding could move it across, so every expected gradient is well defined."""
    with torch.no_grad():
        pre = _torch_conv(x, w, b, **kwargs)
    go = torch.randn(pre.shape, dtype=pre.dtype)
    if activation == "relu":
        scale = 1 + (pre.abs().max() if pre.numel() else 0)
        go = torch.where(pre.abs() < 1e-3 * scale, torch.zeros_like(go), go)
    return go


def _forward_backward(fn, x, w, b, go, activation, kwargs):
    out = fn(x, w, b, activation=activation, **kwargs)
    inputs = [t for t in (x, w, b) if t is not None and t.requires_grad]
    grads = torch.autograd.grad(out, inputs, go, allow_unused=False)
    return out, grads


def _reductions(g: Geometry, out_shape) -> tuple[int, ...]:
    """Reduction lengths of (forward, grad_input, grad_weight, grad_bias)."""
    ho_wo = out_shape[-1] * out_shape[-2]
    return (
        g.C // g.groups * g.R * g.S,
        g.K // g.groups * g.R * g.S,
        max(g.N, 1) * ho_wo,
        max(g.N, 1) * ho_wo,
    )


def _check_against_both(x, w, b, activation, kwargs, reductions):
    go = _grad_output(x, w, b, activation, kwargs)
    out, grads = _forward_backward(fastcnn.ops.conv2d, x, w, b, go, activation, kwargs)
    names = ["grad_input", "grad_weight", "grad_bias"][: len(grads)]
    dtype = x.dtype
    for ref_fn in (_reference_conv, _torch_conv):
        ref_out, ref_grads = _forward_backward(ref_fn, x, w, b, go, activation, kwargs)
        torch.testing.assert_close(
            out, ref_out, **_tol(dtype, reductions[0]), msg=lambda m: f"output: {m}"
        )
        for name, got, want, red in zip(names, grads, ref_grads, reductions[1:]):
            assert got.shape == want.shape, name
            torch.testing.assert_close(
                got, want, **_tol(dtype, red), msg=lambda m, name=name: f"{name}: {m}"
            )
    return out, grads


# --------------------------------------------------------------------------------------------
# Values against the reference and torch
# --------------------------------------------------------------------------------------------


class TestConv2dValues:
    @pytest.mark.parametrize("epilogue", EPILOGUES.values(), ids=EPILOGUES.keys())
    @pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
    @pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_forward_and_gradients(self, dtype, geometry, layout, epilogue):
        g = geometry
        has_bias, activation = epilogue
        x = _make((g.N, g.C, g.H, g.W), dtype, layout[0])
        w = _make((g.K, g.C // g.groups, g.R, g.S), dtype, layout[1])
        b = _make((g.K,), dtype, "sliced" if layout[0] == "sliced" else "contiguous")
        b = b if has_bias else None
        with torch.no_grad():
            out_shape = F.conv2d(x, w, None, **g.kwargs()).shape
        _check_against_both(x, w, b, activation, g.kwargs(), _reductions(g, out_shape))

    @pytest.mark.parametrize("has_bias", [False, True])
    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_relu_without_bias_and_with_dead_units(self, dtype, has_bias):
        # A strongly negative bias kills most units: their gradients must be exactly zero.
        x = _make((2, 4, 6, 6), dtype)
        w = _make((5, 4, 3, 3), dtype)
        b = None
        if has_bias:
            b = (torch.tensor([-100.0, 0.0, 100.0, -1.0, 1.0], dtype=dtype)).requires_grad_()
        _check_against_both(x, w, b, "relu", dict(padding=1), (36, 45, 72, 72))
        out = fastcnn.ops.conv2d(x, w, b, padding=1, activation="relu")
        assert (out >= 0).all()
        if has_bias:
            assert (out[:, 0] == 0).all()
            out.sum().backward()
            assert b.grad[0] == 0

    @pytest.mark.parametrize("layout", ["contiguous", "sliced", "transposed"])
    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_unbatched_input(self, dtype, layout):
        x = _make((1, 3, 8, 7), dtype, layout)[0].detach().requires_grad_()
        assert x.dim() == 3
        w = _make((4, 3, 3, 2), dtype)
        b = _make((4,), dtype)
        kwargs = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2))
        out, _ = _check_against_both(x, w, b, None, kwargs, (18, 24, 12, 12))
        assert out.shape == F.conv2d(x, w, b, **kwargs).shape
        assert out.dim() == 3

    @pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
    @pytest.mark.parametrize("activation", [None, "relu"])
    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_empty_batch(self, dtype, activation, layout):
        x = _make((0, 4, 6, 5), dtype, layout[0])
        w = _make((6, 2, 3, 3), dtype, layout[1])
        b = _make((6,), dtype)
        kwargs = dict(padding=1, groups=2)
        out = fastcnn.ops.conv2d(x, w, b, activation=activation, **kwargs)
        want = _torch_conv(x, w, b, activation=activation, **kwargs)
        assert out.shape == want.shape == (0, 6, 6, 5)
        go = torch.randn(out.shape, dtype=dtype)
        gx, gw, gb = torch.autograd.grad(out, (x, w, b), go)
        wx, ww, wb = torch.autograd.grad(want, (x, w, b), go)
        assert gx.shape == wx.shape == x.shape
        torch.testing.assert_close(gw, ww, rtol=0, atol=0)
        torch.testing.assert_close(gb, wb, rtol=0, atol=0)
        assert (gw == 0).all() and (gb == 0).all()

    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_expanded_inputs(self, dtype):
        """Zero strides (broadcast views) are copied, not read as dense tensors."""
        x = torch.randn(1, 3, 1, 6, dtype=dtype).expand(2, 3, 7, 6).requires_grad_()
        w = torch.randn(4, 3, 3, 1, dtype=dtype).expand(4, 3, 3, 3).requires_grad_()
        b = torch.randn(1, dtype=dtype).expand(4).requires_grad_()
        _check_against_both(x, w, b, None, dict(padding=1), (27, 36, 84, 84))

    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_channels_last_batch_slice(self, dtype):
        """A batch slice of a channels_last tensor is channels_last with a storage offset."""
        x = _make((3, 5, 6, 7), dtype, "channels_last")[1:].detach().requires_grad_()
        w = _make((6, 5, 3, 2), dtype, "channels_last")[2:].detach().requires_grad_()
        assert _is_cl(x) and x.storage_offset() > 0 and w.storage_offset() > 0
        b = _make((4,), dtype)
        _check_against_both(x, w, b, "relu", dict(stride=(1, 2)), (30, 24, 72, 72))

    def test_zero_filters_rejected_or_zero_gradient(self):
        """torch rejects a weight with K = 0; fastcnn must reject it too (naming the weight)
        or, if it accepts it, return an empty output and a zero input gradient, never
        uninitialized memory."""
        x = _make((2, 3, 5, 5), torch.float32)
        w = _make((0, 3, 3, 3), torch.float32)
        with pytest.raises(RuntimeError):
            F.conv2d(x, w)
        try:
            out = fastcnn.ops.conv2d(x, w)
        except ValueError as e:
            assert "weight" in str(e)
            return
        assert out.shape == (2, 0, 3, 3)
        (gx,) = torch.autograd.grad(out, (x,), torch.ones_like(out))
        torch.testing.assert_close(gx, torch.zeros_like(x), rtol=0, atol=0)

    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_bias_only_output(self, dtype):
        # A zero weight leaves the bias (and ReLU of it) exactly: checks the epilogue alone.
        x = _make((2, 3, 5, 5), dtype)
        w = torch.zeros(4, 3, 3, 3, dtype=dtype)
        b = torch.tensor([-1.5, 0.0, 0.25, 3.0], dtype=dtype)
        out = fastcnn.ops.conv2d(x, w, b, padding=1)
        torch.testing.assert_close(out, b.view(1, 4, 1, 1).expand(2, 4, 5, 5), rtol=0, atol=0)
        out = fastcnn.ops.conv2d(x, w, b, padding=1, activation="relu")
        torch.testing.assert_close(
            out, b.clamp(min=0).view(1, 4, 1, 1).expand(2, 4, 5, 5), rtol=0, atol=0
        )

    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_nan_propagates(self, dtype):
        x = torch.randn(1, 2, 5, 5, dtype=dtype)
        x[0, 1, 0, 1] = float("nan")  # in the windows of outputs (0, 0) and (0, 1)
        w = torch.randn(3, 2, 3, 3, dtype=dtype)
        for activation in (None, "relu"):
            out = fastcnn.ops.conv2d(x, w, activation=activation)
            want = _torch_conv(x, w, None, activation=activation)
            assert torch.equal(out.isnan(), want.isnan())
            assert out.isnan().sum() == 6 and out[0, :, 0, :2].isnan().all()

    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_partial_requires_grad(self, dtype):
        """Only the gradients asked for are computed; the others stay None."""
        x = _make((2, 3, 6, 6), dtype, requires_grad=False)
        w = _make((4, 3, 3, 3), dtype)
        b = _make((4,), dtype, requires_grad=False)
        go = torch.randn(2, 4, 4, 4, dtype=dtype)
        out = fastcnn.ops.conv2d(x, w, b)
        (gw,) = torch.autograd.grad(out, (w,), go)
        (ww,) = torch.autograd.grad(F.conv2d(x, w, b), (w,), go)
        torch.testing.assert_close(gw, ww, **_tol(dtype, 32))
        x.requires_grad_()
        w.requires_grad_(False)
        out = fastcnn.ops.conv2d(x, w, b)
        out.backward(go)
        assert w.grad is None and b.grad is None
        torch.testing.assert_close(
            x.grad, torch.autograd.grad(F.conv2d(x, w, b), (x,), go)[0], **_tol(dtype, 36)
        )


# --------------------------------------------------------------------------------------------
# Memory formats
# --------------------------------------------------------------------------------------------


class TestConv2dMemoryFormat:
    @pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
    @pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_output_format_matches_torch(self, dtype, geometry, layout):
        g = geometry
        x = _make((g.N, g.C, g.H, g.W), dtype, layout[0], requires_grad=False)
        w = _make((g.K, g.C // g.groups, g.R, g.S), dtype, layout[1], requires_grad=False)
        out = fastcnn.ops.conv2d(x, w, **g.kwargs())
        want = F.conv2d(x, w, **g.kwargs())
        assert out.shape == want.shape
        assert out.is_contiguous() or _is_cl(out)
        # Tensors asked for as channels_last that are also contiguous (C/groups = 1, a 1x1
        # kernel, one channel) are checked in test_output_format_ambiguous_layout.
        ambiguous = [t.is_contiguous() and _is_cl(t) for t in (x, w)]
        if not any(a and lay == "channels_last" for a, lay in zip(ambiguous, layout)):
            _assert_same_format(out, want)

    @pytest.mark.parametrize(
        "x_shape, w_shape, x_cl, w_cl, groups",
        [
            ((2, 4, 7, 6), (4, 1, 3, 3), False, True, 4),
            ((2, 4, 7, 6), (8, 1, 3, 3), False, True, 4),
            ((2, 4, 7, 6), (6, 4, 1, 1), False, True, 1),
            ((2, 1, 7, 6), (3, 1, 3, 3), True, False, 1),
            ((2, 1, 7, 6), (3, 1, 3, 3), True, True, 1),
        ],
        ids=["depthwise_w_cl", "depthwise_mult2_w_cl", "conv1x1_w_cl", "gray_x_cl", "gray_both_cl"],
    )
    def test_output_format_ambiguous_layout(self, x_shape, w_shape, x_cl, w_cl, groups):
        """``.to(memory_format=torch.channels_last)`` of a tensor with one channel per group,
        a 1x1 kernel or a one-channel image gives strides that are also contiguous; torch
        still reads them as channels_last (``suggest_memory_format``), as after
        ``model.to(memory_format=torch.channels_last)``."""
        x, w = torch.randn(x_shape), torch.randn(w_shape)
        x = x.to(memory_format=CL) if x_cl else x
        w = w.to(memory_format=CL) if w_cl else w
        out = fastcnn.ops.conv2d(x, w, groups=groups)
        want = F.conv2d(x, w, groups=groups)
        torch.testing.assert_close(out, want, **_tol(torch.float32, 36))
        _assert_same_format(out, want)

    @pytest.mark.parametrize("which", ["input", "weight"])
    def test_output_format_strided_channels_last_like(self, which):
        """A non-dense tensor whose channels are innermost (every other channel of an NHWC
        tensor): torch treats it as channels_last."""
        x = _make((2, 4, 7, 6), torch.float32, "cl_gaps" if which == "input" else "contiguous")
        w = _make((6, 4, 3, 3), torch.float32, "cl_gaps" if which == "weight" else "contiguous")
        out = fastcnn.ops.conv2d(x, w, padding=1)
        want = F.conv2d(x, w, padding=1)
        torch.testing.assert_close(out, want, **_tol(torch.float32, 36))
        _assert_same_format(out, want)

    @pytest.mark.parametrize(
        "geometry",
        [Geometry(C=4, K=6, groups=2, padding=1), Geometry(C=4, K=4, groups=4), Geometry(R=1, S=1)],
        ids=["groups2", "depthwise", "conv1x1"],
    )
    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_gradient_formats_match_torch(self, dtype, layout, geometry):
        """With input and weight in one layout, the gradients come in it too (as torch)."""
        g = geometry
        x = _make((g.N, g.C, g.H, g.W), dtype, layout)
        w = _make((g.K, g.C // g.groups, g.R, g.S), dtype, layout)
        b = _make((g.K,), dtype)
        out = fastcnn.ops.conv2d(x, w, b, **g.kwargs())
        want = F.conv2d(x, w, b, **g.kwargs())
        go = torch.randn(want.shape, dtype=dtype)
        grads = torch.autograd.grad(out, (x, w, b), go)
        wants = torch.autograd.grad(want, (x, w, b), go)
        for name, got, ref, t in zip(("grad_input", "grad_weight"), grads, wants, (x, w)):
            assert (_is_cl(got), got.is_contiguous()) == (_is_cl(ref), ref.is_contiguous()), (
                name,
                got.stride(),
                ref.stride(),
            )
            assert _is_cl(got) == _is_cl(t) and got.is_contiguous() == t.is_contiguous(), name

    @pytest.mark.parametrize("channels_last", [False, True])
    def test_channels_last_go_with_contiguous_output(self, channels_last):
        """The upstream gradient may come in the other layout than the output."""
        x = _make((2, 3, 6, 6), torch.float64)
        w = _make((4, 3, 3, 3), torch.float64, "channels_last" if channels_last else "contiguous")
        go = torch.randn(2, 4, 4, 4, dtype=torch.float64)
        go = go.contiguous() if channels_last else go.to(memory_format=CL)
        got = torch.autograd.grad(fastcnn.ops.conv2d(x, w), (x, w), go)
        want = torch.autograd.grad(F.conv2d(x, w), (x, w), go)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, **_tol(torch.float64, 32))

    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_inputs_are_not_modified(self, dtype):
        x = _make((2, 3, 6, 6), dtype, "channels_last")
        w = _make((4, 3, 3, 3), dtype, "sliced")
        b = _make((4,), dtype)
        copies = [t.detach().clone() for t in (x, w, b)]
        strides = [t.stride() for t in (x, w, b)]
        out = fastcnn.ops.conv2d(x, w, b, padding=1, activation="relu")
        out.backward(torch.randn_like(out))
        for t, c, s in zip((x, w, b), copies, strides):
            assert torch.equal(t.detach(), c) and t.stride() == s


# --------------------------------------------------------------------------------------------
# gradcheck, opcheck, torch.compile, threads, meta
# --------------------------------------------------------------------------------------------

GRADCHECK_CASES = {
    "basic": (Geometry(N=2, C=2, K=3, H=5, W=4), "contiguous", None, True),
    "stride_pad": (
        Geometry(N=2, C=2, K=3, H=6, W=5, stride=2, padding=1),
        "contiguous",
        None,
        True,
    ),
    "dilation_pair": (
        Geometry(N=1, C=2, K=2, H=7, W=6, dilation=(2, 1), padding=(2, 0)),
        "channels_last",
        None,
        True,
    ),
    "groups": (Geometry(N=2, C=4, K=4, H=5, W=5, groups=2, padding=1), "contiguous", None, False),
    "depthwise_mult": (
        Geometry(N=1, C=3, K=6, H=5, W=5, groups=3, stride=(1, 2)),
        "channels_last",
        None,
        True,
    ),
    "same_even": (
        Geometry(N=1, C=2, K=2, H=5, W=4, R=2, S=4, padding="same"),
        "sliced",
        None,
        True,
    ),
    "relu": (Geometry(N=2, C=2, K=3, H=5, W=5, padding=1), "contiguous", "relu", True),
    "relu_channels_last": (
        Geometry(N=1, C=3, K=4, H=6, W=5, stride=2, groups=1),
        "channels_last",
        "relu",
        True,
    ),
    "relu_no_bias": (Geometry(N=1, C=2, K=3, H=5, W=5), "contiguous", "relu", False),
}


def _away_from_kink(x, w, b, kwargs, margin=1e-2):
    """A bias offset for gradcheck of a ReLU: per filter, 0 moves into the largest gap between
    the pre-activations, so every one is at least ``margin`` from the kink and each filter
    has both live and dead outputs."""
    with torch.no_grad():
        pre = F.conv2d(x, w, b, **kwargs)
        shift = torch.zeros(w.shape[0], dtype=x.dtype)
        for k in range(w.shape[0]):
            vals = pre[:, k].flatten().sort().values
            i = int((vals[1:] - vals[:-1]).argmax())
            shift[k] = -(vals[i] + vals[i + 1]) / 2
            moved = vals + shift[k]
            assert moved.abs().min() > margin and (moved > 0).any() and (moved < 0).any()
    return shift


class TestConv2dAutogradAndTracing:
    @pytest.mark.parametrize("case", GRADCHECK_CASES.values(), ids=GRADCHECK_CASES.keys())
    def test_gradcheck(self, case):
        g, layout, activation, has_bias = case
        dtype = torch.float64
        x = _make((g.N, g.C, g.H, g.W), dtype, layout)
        w = _make((g.K, g.C // g.groups, g.R, g.S), dtype, layout)
        b = _make((g.K,), dtype) if has_bias else None
        if activation == "relu":
            shift = _away_from_kink(x, w, b, g.kwargs())
            if has_bias:
                b = (b.detach() + shift).requires_grad_()
            else:  # no bias to shift: require the random pre-activations to be off 0
                with torch.no_grad():
                    assert F.conv2d(x, w, **g.kwargs()).abs().min() > 1e-3
        inputs = tuple(t for t in (x, w, b) if t is not None)

        def fn(*args):
            xx, ww, *bb = args
            return fastcnn.ops.conv2d(
                xx, ww, bb[0] if bb else None, activation=activation, **g.kwargs()
            )

        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)

    @pytest.mark.parametrize("relu", [False, True])
    @pytest.mark.parametrize(
        "layout", ["contiguous", "channels_last", "mixed"], ids=["contig", "cl", "mixed"]
    )
    @pytest.mark.parametrize("has_bias", [True, False])
    def test_opcheck_forward(self, has_bias, layout, relu):
        xl = "contiguous" if layout == "contiguous" else "channels_last"
        wl = "channels_last" if layout == "channels_last" else "contiguous"
        x = _make((2, 4, 6, 5), torch.float32, xl)
        w = _make((6, 2, 2, 3), torch.float32, wl)
        b = _make((6,), torch.float32) if has_bias else None
        args = (x, w, b, [2, 1], [0, 1], [1, 1], [1, 2], 2, relu)
        torch.library.opcheck(torch.ops.fastcnn.conv2d.default, args)

    @pytest.mark.parametrize("channels_last", [False, True])
    def test_opcheck_backward_ops(self, channels_last):
        fmt = CL if channels_last else torch.contiguous_format
        x = torch.randn(2, 4, 7, 6).to(memory_format=fmt)
        w = torch.randn(6, 2, 3, 2).to(memory_format=fmt)
        geometry = ([1, 2], [1, 0], [1, 1], [1, 1], 2)
        go = torch.randn(2, 6, 7, 3).to(memory_format=fmt)
        assert go.shape == F.conv2d(F.pad(x, (0, 1, 1, 1)), w, stride=(1, 2), groups=2).shape
        torch.library.opcheck(
            torch.ops.fastcnn.conv2d_backward_input.default,
            (go, w, list(x.shape), channels_last, *geometry),
        )
        torch.library.opcheck(
            torch.ops.fastcnn.conv2d_backward_weight.default,
            (go, x, list(w.shape), channels_last, *geometry),
        )
        torch.library.opcheck(torch.ops.fastcnn.conv2d_backward_bias.default, (go,))

    @pytest.mark.parametrize("channels_last", [False, True])
    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_backward_ops_directly(self, dtype, channels_last):
        """The backward ops on their own, with the asymmetric padding of 'same' and an even
        kernel, against torch.nn.grad."""
        fmt = CL if channels_last else torch.contiguous_format
        x = torch.randn(2, 4, 7, 6, dtype=dtype).to(memory_format=fmt)
        w = torch.randn(6, 2, 4, 2, dtype=dtype).to(memory_format=fmt)
        go = torch.randn(2, 6, 7, 6, dtype=dtype).to(memory_format=fmt)
        # 'same' for a 4x2 kernel pads 1 before and 2 after in H, 0 and 1 in W.
        geometry = ([1, 1], [1, 0], [2, 1], [1, 1], 2)
        gx = torch.ops.fastcnn.conv2d_backward_input(go, w, list(x.shape), channels_last, *geometry)
        gw = torch.ops.fastcnn.conv2d_backward_weight(
            go, x, list(w.shape), channels_last, *geometry
        )
        gb = torch.ops.fastcnn.conv2d_backward_bias(go)
        xs = x.detach().requires_grad_()
        ws = w.detach().requires_grad_()
        bs = torch.zeros(6, dtype=dtype, requires_grad=True)
        want = torch.autograd.grad(F.conv2d(xs, ws, bs, padding="same", groups=2), (xs, ws, bs), go)
        for got, ref, red in zip((gx, gw, gb), want, (12, 84, 84)):
            torch.testing.assert_close(got, ref, **_tol(dtype, red))
        assert _is_cl(gx) == channels_last and _is_cl(gw) == channels_last

    def test_compile_fullgraph(self):
        torch._dynamo.reset()

        def fn(x, w, b, w2):
            y = fastcnn.ops.conv2d(x, w, b, padding="same", activation="relu")
            y = fastcnn.ops.conv2d(y, w2, None, stride=2, padding=1, groups=2)
            return y

        compiled = torch.compile(fn, fullgraph=True)
        for fmt in (torch.contiguous_format, CL):
            x = torch.randn(2, 3, 8, 8).to(memory_format=fmt).requires_grad_()
            w = torch.randn(4, 3, 3, 3, requires_grad=True)
            b = torch.randn(4, requires_grad=True)
            w2 = torch.randn(6, 2, 3, 3, requires_grad=True)
            eager = fn(x, w, b, w2)
            go = torch.randn_like(eager)
            eager_grads = torch.autograd.grad(eager, (x, w, b, w2), go)
            got = compiled(x, w, b, w2)
            torch.testing.assert_close(got, eager, rtol=1e-6, atol=1e-6)
            got_grads = torch.autograd.grad(got, (x, w, b, w2), go)
            for a, e in zip(got_grads, eager_grads):
                torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-5)
            # ... and both agree with torch.
            want = F.conv2d(F.relu(F.conv2d(x, w, b, padding="same")), w2, None, 2, 1, 1, 2)
            torch.testing.assert_close(got, want, **_tol(torch.float32, 36))

    @pytest.mark.parametrize(
        "geometry",
        [
            Geometry(N=1, C=7, K=37, H=6, W=5, padding=1),  # row panels split between threads
            Geometry(N=1, C=3, K=5, H=26, W=27),  # reduction slices of the weight gradient
            Geometry(N=3, C=300, K=20, H=6, W=5, padding=1),
            Geometry(N=2, C=6, K=9, H=9, W=8, groups=3, stride=2),
            Geometry(N=1, C=48, K=96, H=9, W=8, groups=48, padding=1),
        ],
        ids=["panels", "weight_slices", "C300", "groups", "depthwise"],
    )
    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_thread_count_independence(self, dtype, geometry):
        g = geometry
        x = _make((g.N, g.C, g.H, g.W), dtype, "channels_last")
        w = _make((g.K, g.C // g.groups, g.R, g.S), dtype)
        b = _make((g.K,), dtype)
        go = torch.randn(F.conv2d(x, w, b, **g.kwargs()).shape, dtype=dtype)

        def run():
            out = fastcnn.ops.conv2d(x, w, b, **g.kwargs())
            return (out, *torch.autograd.grad(out, (x, w, b), go))

        before = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            one = run()
            torch.set_num_threads(2)
            two = run()
            again = run()
        finally:
            torch.set_num_threads(before)
        assert torch.get_num_threads() == before
        red = _reductions(g, go.shape)
        for a, b2, r in zip(one, two, red):
            torch.testing.assert_close(a, b2, **_tol(dtype, r))
        for a, b2 in zip(two, again):  # same thread count: the same bits
            assert torch.equal(a, b2)

    def test_meta_tensors(self):
        x = torch.empty(2, 4, 9, 8, device="meta")
        w = torch.empty(6, 2, 3, 2, device="meta")
        kwargs = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
        out = fastcnn.ops.conv2d(x, w, **kwargs)
        assert out.device.type == "meta"
        assert (
            out.shape == F.conv2d(torch.empty(2, 4, 9, 8), torch.empty(6, 2, 3, 2), **kwargs).shape
        )


# --------------------------------------------------------------------------------------------
# Hypothesis fuzzing of the geometry
# --------------------------------------------------------------------------------------------


@st.composite
def conv_problems(draw):
    groups = draw(st.integers(1, 3))
    cg, kg = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    r, s = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(
        st.one_of(
            st.sampled_from(["same", "valid"]),
            st.integers(0, 3),
            st.tuples(st.integers(0, 3), st.integers(0, 3)),
        )
    )
    stride = (1, 1) if padding == "same" else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    if isinstance(padding, str):
        pad = (0, 0)  # 'valid'; 'same' fits any size
    elif isinstance(padding, int):
        pad = (padding, padding)
    else:
        pad = padding
    span = (dilation[0] * (r - 1) + 1, dilation[1] * (s - 1) + 1)
    low = [1 if padding == "same" else max(1, span[i] - 2 * pad[i]) for i in range(2)]
    h, w = low[0] + draw(st.integers(0, 6)), low[1] + draw(st.integers(0, 6))
    return dict(
        geometry=Geometry(
            N=draw(st.integers(0, 3)),
            C=groups * cg,
            K=groups * kg,
            H=h,
            W=w,
            R=r,
            S=s,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
        ),
        layout=(
            draw(st.sampled_from(["contiguous", "channels_last", "sliced"])),
            draw(st.sampled_from(["contiguous", "channels_last", "permuted"])),
        ),
        dtype=draw(st.sampled_from(DTYPES)),
        has_bias=draw(st.booleans()),
        activation=draw(st.sampled_from([None, "relu"])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


class TestConv2dFuzz:
    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(problem=conv_problems())
    def test_against_torch(self, problem):
        g, layout, dtype = problem["geometry"], problem["layout"], problem["dtype"]
        torch.manual_seed(problem["seed"])
        x = _make((g.N, g.C, g.H, g.W), dtype, layout[0])
        w = _make((g.K, g.C // g.groups, g.R, g.S), dtype, layout[1])
        b = _make((g.K,), dtype) if problem["has_bias"] else None
        with torch.no_grad():
            out_shape = _torch_conv(x, w, b, **g.kwargs()).shape
        assume(out_shape[2] >= 1 and out_shape[3] >= 1)
        _check_against_both(x, w, b, problem["activation"], g.kwargs(), _reductions(g, out_shape))

    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    def test_depthwise_padding_wider_than_the_output(self, layout):
        """A tap whose padding covers more columns than the output has (W = 2, pw = 4): the
        padded outputs it adds to stay inside the row. Found by the fuzz above under
        AddressSanitizer, which reported a read past the output."""
        x = _make((3, 2, 7, 2), torch.float32, "contiguous")
        w = _make((6, 1, 3, 4), torch.float32, layout)
        kwargs = dict(padding="same", dilation=(1, 3), groups=2)
        _check_against_both(x, w, None, None, kwargs, (12, 36, 42, 42))  # see _reductions


# --------------------------------------------------------------------------------------------
# Errors of the Python API
# --------------------------------------------------------------------------------------------


def _t(*shape, dtype=torch.float32):
    return torch.randn(shape, dtype=dtype)


X, W, B = _t(2, 4, 8, 8), _t(6, 4, 3, 3), _t(6)

# name: (args, kwargs, exception type, message pattern)
ERRORS = {
    "input_2d": ((_t(4, 8), W), {}, ValueError, r"input must be 3-D or 4-D .*got shape \(4, 8\)"),
    "input_5d": ((_t(1, 2, 4, 8, 8), W), {}, ValueError, r"input must be 3-D or 4-D"),
    "weight_3d": ((X, _t(6, 4, 3)), {}, ValueError, r"weight must be 4-D .*got shape \(6, 4, 3\)"),
    "weight_5d": ((X, _t(6, 4, 3, 3, 1)), {}, ValueError, r"weight must be 4-D"),
    "bias_2d": ((X, W, _t(6, 1)), {}, ValueError, r"bias must be 1-D .*got shape \(6, 1\)"),
    "bias_0d": ((X, W, _t()), {}, ValueError, r"bias must be 1-D"),
    "weight_float64": (
        (X, W.double()),
        {},
        TypeError,
        r"weight must have the dtype of input \(torch.float32\), got torch.float64",
    ),
    "bias_float64": ((X, W, B.double()), {}, TypeError, r"bias must have the dtype of input"),
    "input_int": ((X.long(), W), {}, TypeError, r"input must be a floating-point .*int64"),
    "weight_int": ((X, W.int()), {}, TypeError, r"weight must be a floating-point"),
    "input_bool": ((X > 0, W), {}, TypeError, r"input must be a floating-point .*bool"),
    "bias_bool": ((X, W, B > 0), {}, TypeError, r"bias must be a floating-point"),
    "input_float16": ((X.half(), W.half()), {}, TypeError, r"input must be float32 or float64"),
    "input_list": ((X.tolist(), W), {}, TypeError, r"input must be a Tensor, got list"),
    "input_numpy": ((X.numpy(), W), {}, TypeError, r"input must be a Tensor, got ndarray"),
    "weight_none": ((X, None), {}, TypeError, r"weight must be a Tensor, got NoneType"),
    "bias_float": ((X, W, 1.0), {}, TypeError, r"bias must be a Tensor, got float"),
    "channels_not_divisible": (
        (X, _t(6, 4, 3, 3)),
        {"groups": 3},
        ValueError,
        r"input channels \(4\) .*divisible by groups \(3\)",
    ),
    "filters_not_divisible": (
        (X, _t(5, 2, 3, 3)),
        {"groups": 2},
        ValueError,
        r"filters \(5\) must be divisible by groups \(2\)",
    ),
    "weight_channel_mismatch": (
        (X, _t(6, 3, 3, 3)),
        {},
        ValueError,
        r"weight must be \[K, C/groups, R, S\] = \[6, 4, .*got shape \(6, 3, 3, 3\)",
    ),
    "weight_channel_mismatch_groups": (
        (X, _t(6, 4, 3, 3)),
        {"groups": 2},
        ValueError,
        r"weight must be \[K, C/groups, R, S\] = \[6, 2,",
    ),
    "weight_empty_kernel": ((X, _t(6, 4, 0, 3)), {}, ValueError, r"weight must be \[K, C/groups"),
    "bias_wrong_size": ((X, W, _t(5)), {}, ValueError, r"bias must have shape \(6,\), got \(5,\)"),
    "kernel_larger_than_input": (
        (X, _t(6, 4, 9, 3)),
        {},
        ValueError,
        r"kernel \(9x3 with dilation\) is larger than the padded input \(8x8\)",
    ),
    "dilated_kernel_larger": (
        (X, W),
        {"dilation": 5, "padding": 1},
        ValueError,
        r"kernel \(11x11 with dilation\) is larger than the padded input \(10x10\)",
    ),
    "stride_0": ((X, W), {"stride": 0}, ValueError, r"stride must be >= 1, got 0"),
    "stride_negative_pair": ((X, W), {"stride": (1, -2)}, ValueError, r"stride must be >= 1"),
    "stride_float": ((X, W), {"stride": 1.5}, TypeError, r"stride must be an int or a pair"),
    "stride_triple": ((X, W), {"stride": (1, 1, 1)}, TypeError, r"stride must be an int or a pair"),
    "dilation_0": ((X, W), {"dilation": 0}, ValueError, r"dilation must be >= 1, got 0"),
    "dilation_str": ((X, W), {"dilation": "2"}, TypeError, r"dilation must be an int or a pair"),
    "padding_negative": ((X, W), {"padding": -1}, ValueError, r"padding must be >= 0, got -1"),
    "padding_negative_pair": ((X, W), {"padding": (0, -2)}, ValueError, r"padding must be >= 0"),
    "padding_float": ((X, W), {"padding": 1.0}, TypeError, r"padding must be an int or a pair"),
    "padding_bad_string": (
        (X, W),
        {"padding": "full"},
        ValueError,
        r"padding must be an int, a pair, 'same' or 'valid', got 'full'",
    ),
    "padding_same_stride2": (
        (X, W),
        {"padding": "same", "stride": 2},
        ValueError,
        r"padding='same' needs stride 1",
    ),
    "groups_0": ((X, W), {"groups": 0}, ValueError, r"groups must be an int >= 1, got 0"),
    "groups_float": ((X, W), {"groups": 1.0}, ValueError, r"groups must be an int >= 1"),
    "activation_gelu": (
        (X, W),
        {"activation": "gelu"},
        ValueError,
        r"activation must be None or 'relu', got 'gelu'",
    ),
    "activation_module": (
        (X, W),
        {"activation": torch.nn.ReLU()},
        ValueError,
        r"activation must be None or 'relu'",
    ),
}


class TestConv2dErrors:
    @pytest.mark.parametrize("case", ERRORS.values(), ids=ERRORS.keys())
    def test_error(self, case):
        args, kwargs, exc, pattern = case
        with pytest.raises(exc, match=r"^conv2d: .*" + pattern):
            fastcnn.ops.conv2d(*args, **kwargs)

    @pytest.mark.parametrize("which", ["input_wrt_weight", "weight_wrt_input", "bias_wrt_grad"])
    @pytest.mark.parametrize("activation", [None, "relu"])
    def test_double_backward_raises(self, which, activation):
        x = _make((2, 3, 6, 6), torch.float64)
        w = _make((4, 3, 3, 3), torch.float64)
        b = _make((4,), torch.float64)
        go = torch.randn(2, 4, 4, 4, dtype=torch.float64, requires_grad=True)
        out = fastcnn.ops.conv2d(x, w, b, activation=activation)
        gx, gw, gb = torch.autograd.grad(out, (x, w, b), go, create_graph=True)
        first, wrt = {
            "input_wrt_weight": (gx, w),
            "weight_wrt_input": (gw, x),
            "bias_wrt_grad": (gb, go),
        }[which]
        with pytest.raises(RuntimeError, match=r"conv2d: double backward .* not supported"):
            torch.autograd.grad(first.sum(), wrt)

    @pytest.mark.needs_cuda
    def test_cpu_input_with_cuda_weight(self):
        x = torch.randn(1, 3, 8, 8)
        w = torch.randn(4, 3, 3, 3, device="cuda")
        with pytest.raises((ValueError, RuntimeError), match=r"conv2d: weight .*cuda"):
            fastcnn.ops.conv2d(x, w)


# --------------------------------------------------------------------------------------------
# The compiled module's own checks (no Python checks in front of them)
# --------------------------------------------------------------------------------------------


def _cap(t):
    return None if t is None else to_dlpack(t)


@dataclass
class Raw:
    """An argument passed to the compiled module as it is, not as a capsule."""

    obj: object


def _wrap(v):
    return v.obj if isinstance(v, Raw) else _cap(v)


class _Direct:
    """A valid direct call of ``_C.conv2d_forward`` and the pieces to spoil one at a time."""

    def __init__(self, dtype=torch.float32):
        self.x = torch.randn(2, 4, 7, 6, dtype=dtype)
        self.w = torch.randn(6, 2, 3, 3, dtype=dtype)
        self.b = torch.randn(6, dtype=dtype)
        self.y = torch.empty(2, 6, 7, 6, dtype=dtype)
        self.geometry = dict(
            stride=(1, 1), pad_begin=(1, 1), pad_end=(1, 1), dilation=(1, 1), groups=2
        )
        self.threads = 2

    def workspace_bytes(self, **over):
        g = {**self.geometry, **over.pop("geometry", {})}
        x, w, y = over.get("x", self.x), over.get("w", self.w), over.get("y", self.y)
        return _C.conv2d_workspace(
            "forward", _cap(x), _cap(w), _cap(y), *g.values(), over.get("threads", self.threads)
        )

    def run(self, **over):
        """Calls the kernel with the fields in ``over`` replaced (tensors or capsules)."""
        g = {**self.geometry, **over.pop("geometry", {})}
        x, w, y = over.get("x", self.x), over.get("w", self.w), over.get("y", self.y)
        b = over.get("b", self.b)
        ws = over["ws"] if "ws" in over else torch.empty(self.workspace_bytes(), dtype=torch.uint8)
        tensors = [_wrap(t) for t in (x, w, b, y)]
        relu, threads = over.get("relu", False), over.get("threads", self.threads)
        _C.conv2d_forward(*tensors, *g.values(), relu, _wrap(ws), threads)
        return y


# name: (changes to a valid call, exception type, message after 'conv2d: ')
DIRECT_ERRORS = {
    "output_shape": (
        lambda d: dict(y=torch.empty(2, 6, 7, 5)),
        ValueError,
        r"output must have shape \(2, 6, 7, 6\), got \(2, 6, 7, 5\)",
    ),
    "output_3d": (lambda d: dict(y=torch.empty(6, 7, 6)), ValueError, r"output must be 4-D"),
    "output_5d": (lambda d: dict(y=torch.empty(2, 6, 7, 6, 1)), ValueError, r"output must .* 4"),
    "output_dtype": (
        lambda d: dict(y=torch.empty(2, 6, 7, 6, dtype=torch.float64)),
        TypeError,
        r"output must have dtype float32",
    ),
    "weight_dtype": (
        lambda d: dict(w=d.w.double()),
        TypeError,
        r"weight must have dtype float32 like the input, got float64",
    ),
    "bias_dtype": (lambda d: dict(b=d.b.double()), TypeError, r"bias must have dtype float32"),
    "bias_size": (
        lambda d: dict(b=torch.randn(5)),
        ValueError,
        r"bias must have shape \(6,\), got \(5,\)",
    ),
    "bias_strided": (
        lambda d: dict(b=torch.randn(12)[::2]),
        ValueError,
        r"bias must be contiguous",
    ),
    "input_int32": (
        lambda d: dict(x=d.x.int()),
        TypeError,
        r"input must be float32 or float64 on the CPU, got int32",
    ),
    "input_int64": (
        lambda d: dict(x=d.x.long()),
        TypeError,
        r"input must be float32 or float64 on the CPU, got int64",
    ),
    "input_bool": (
        lambda d: dict(x=d.x > 0),
        TypeError,
        r"input must be float32 or float64 on the CPU, got bool",
    ),
    "float16": (
        lambda d: dict(x=d.x.half(), w=d.w.half(), y=d.y.half(), b=None),
        TypeError,
        r"input must be float32 or float64",
    ),
    "input_sliced": (
        lambda d: dict(x=torch.randn(2, 4, 7, 12)[..., ::2]),
        ValueError,
        r"input must be contiguous or channels_last, got shape \(2, 4, 7, 6\) strides",
    ),
    "input_transposed": (
        lambda d: dict(x=torch.randn(2, 4, 6, 7).transpose(2, 3)),
        ValueError,
        r"input must be contiguous or channels_last",
    ),
    "weight_permuted": (
        lambda d: dict(w=torch.randn(3, 3, 6, 2).permute(2, 3, 0, 1)),
        ValueError,
        r"weight must be contiguous or channels_last",
    ),
    "output_sliced": (
        lambda d: dict(y=torch.empty(2, 6, 7, 12)[..., ::2]),
        ValueError,
        r"output must be contiguous or channels_last",
    ),
    "input_expanded": (
        lambda d: dict(x=torch.randn(1, 4, 7, 6).expand(2, 4, 7, 6)),
        ValueError,
        r"input must be contiguous or channels_last",
    ),
    "bias_expanded": (
        lambda d: dict(b=torch.randn(1).expand(6)),
        ValueError,
        r"bias must be contiguous",
    ),
    "input_3d": (lambda d: dict(x=d.x[0]), ValueError, r"input must be 4-D, got shape \(4, 7, 6\)"),
    "weight_channels": (
        lambda d: dict(w=torch.randn(6, 4, 3, 3)),
        ValueError,
        r"weight must be \[K, C/groups, R, S\] with C/groups = 2, got 4",
    ),
    "groups_divisible": (
        lambda d: dict(geometry=dict(groups=3)),
        ValueError,
        r"channels \(4\) and filters \(6\) must be divisible by groups \(3\)",
    ),
    "groups_0": (
        lambda d: dict(geometry=dict(groups=0)),
        ValueError,
        r"groups must be >= 1, got 0",
    ),
    "stride_0": (
        lambda d: dict(geometry=dict(stride=(0, 1))),
        ValueError,
        r"stride must be >= 1, got 0",
    ),
    "dilation_negative": (
        lambda d: dict(geometry=dict(dilation=(1, -1))),
        ValueError,
        r"dilation must be >= 1, got -1",
    ),
    "pad_begin_negative": (
        lambda d: dict(geometry=dict(pad_begin=(-1, 1))),
        ValueError,
        r"padding must be >= 0",
    ),
    "pad_end_negative": (
        lambda d: dict(geometry=dict(pad_end=(1, -3))),
        ValueError,
        r"padding must be >= 0",
    ),
    # The input is 7x6, padded by 1 on each side: 9x8 (as the Python check reports it).
    "kernel_too_large": (
        lambda d: dict(w=torch.randn(6, 2, 10, 3)),
        ValueError,
        r"the kernel \(10x3 with dilation\) is larger than the padded input \(9x8\)",
    ),
    "threads_0": (lambda d: dict(threads=0), ValueError, r"threads must be >= 1, got 0"),
    "workspace_tiny": (
        lambda d: dict(ws=torch.empty(8, dtype=torch.uint8)),
        ValueError,
        r"workspace must hold at least \d+ bytes, got 8",
    ),
    "workspace_one_short": (
        lambda d: dict(ws=torch.empty(d.workspace_bytes() - 1, dtype=torch.uint8)),
        ValueError,
        r"workspace must hold at least",
    ),
    "workspace_misaligned": (
        lambda d: dict(ws=torch.empty(d.workspace_bytes() + 64, dtype=torch.uint8)[1:]),
        ValueError,
        r"workspace must be 64-byte aligned",
    ),
    "workspace_float": (
        lambda d: dict(ws=torch.empty(d.workspace_bytes(), dtype=torch.float32)),
        ValueError,
        r"workspace must be a contiguous 1-D uint8 tensor",
    ),
    "workspace_2d": (
        lambda d: dict(ws=torch.empty(2, d.workspace_bytes(), dtype=torch.uint8)),
        ValueError,
        r"workspace must be a contiguous 1-D uint8",
    ),
    "workspace_strided": (
        lambda d: dict(ws=torch.empty(2 * d.workspace_bytes(), dtype=torch.uint8)[::2]),
        ValueError,
        r"workspace must be a contiguous 1-D uint8",
    ),
    "tensor_not_capsule": (
        lambda d: dict(x=Raw(d.x)),
        TypeError,
        r"input must be an unused DLPack capsule",
    ),
    "weight_none": (
        lambda d: dict(w=Raw(None)),
        TypeError,
        r"weight must be an unused DLPack capsule",
    ),
    "output_object": (
        lambda d: dict(y=Raw(object())),
        TypeError,
        r"output must be an unused DLPack capsule",
    ),
    "workspace_int": (
        lambda d: dict(ws=Raw(3)),
        TypeError,
        r"workspace must be an unused DLPack capsule",
    ),
}


class TestCompiledModuleChecks:
    def test_valid_direct_call(self):
        d = _Direct()
        y = d.run()
        want = F.conv2d(d.x, d.w, d.b, padding=1, groups=2)
        torch.testing.assert_close(y, want, **_tol(torch.float32, 18))
        y = d.run(relu=True, b=None)
        torch.testing.assert_close(
            y, F.relu(F.conv2d(d.x, d.w, padding=1, groups=2)), **_tol(torch.float32, 18)
        )

    @pytest.mark.parametrize("case", DIRECT_ERRORS.values(), ids=DIRECT_ERRORS.keys())
    def test_forward_rejects(self, case):
        spoil, exc, pattern = case
        d = _Direct()
        over = spoil(d)
        if "ws" not in over:  # a workspace large enough for any of the spoiled calls
            over["ws"] = torch.empty(1 << 20, dtype=torch.uint8)
        with pytest.raises(exc, match=r"^conv2d: " + pattern):
            d.run(**over)

    def test_used_capsule_rejected(self):
        d = _Direct()
        cap = to_dlpack(d.x)
        torch.from_dlpack(cap)  # consumes it
        with pytest.raises(TypeError, match=r"^conv2d: input must be an unused DLPack capsule"):
            d.run(x=Raw(cap))

    def test_workspace_query_checks(self):
        d = _Direct()
        with pytest.raises(ValueError, match=r"pass must be 'forward', 'backward_input' or"):
            _C.conv2d_workspace(
                "sideways", _cap(d.x), _cap(d.w), _cap(d.y), *d.geometry.values(), 2
            )
        with pytest.raises(ValueError, match=r"threads must be >= 1"):
            d.workspace_bytes(threads=0)
        with pytest.raises(ValueError, match=r"output must have shape"):
            d.workspace_bytes(y=torch.empty(2, 6, 6, 6))
        with pytest.raises(TypeError, match=r"weight must have dtype float32"):
            d.workspace_bytes(w=d.w.double())
        assert d.workspace_bytes() >= 0

    @pytest.mark.parametrize("pass_", ["backward_input", "backward_weight"])
    def test_backward_entry_points_reject(self, pass_):
        d = _Direct()
        go, g = torch.randn(2, 6, 7, 6), tuple(d.geometry.values())
        fn = getattr(_C, "conv2d_" + pass_)
        name = "grad_input" if pass_ == "backward_input" else "grad_weight"
        # The second operand is the weight (backward_input) or the input (backward_weight);
        # the third is the gradient being computed.
        if pass_ == "backward_input":
            other, target = d.w, torch.empty(2, 4, 7, 6)
            x, w = target, other
        else:
            other, target = d.x, torch.empty(6, 2, 3, 3)
            x, w = other, target
        nbytes = _C.conv2d_workspace(pass_, _cap(x), _cap(w), _cap(go), *g, 2)
        ws = torch.empty(nbytes, dtype=torch.uint8)
        # Valid: matches torch.
        fn(_cap(go), _cap(other), _cap(target), *g, _cap(ws), 2)
        want = (
            torch.nn.grad.conv2d_input(x.shape, d.w, go, padding=1, groups=2)
            if pass_ == "backward_input"
            else torch.nn.grad.conv2d_weight(d.x, w.shape, go, padding=1, groups=2)
        )
        torch.testing.assert_close(target, want, **_tol(torch.float32, 84))
        op = f"conv2d_{pass_}"
        with pytest.raises(ValueError, match=rf"^{op}: grad_output must have shape"):
            fn(_cap(torch.randn(2, 6, 7, 5)), _cap(other), _cap(target), *g, _cap(ws), 2)
        with pytest.raises(TypeError, match=rf"^{op}: grad_output must have dtype float32"):
            fn(_cap(go.double()), _cap(other), _cap(target), *g, _cap(ws), 2)
        with pytest.raises(ValueError, match=rf"^{op}: {name} must be contiguous or channels_last"):
            bad = torch.empty(*target.shape[:-1], 2 * target.shape[-1])[..., ::2]
            fn(_cap(go), _cap(other), _cap(bad), *g, _cap(ws), 2)
        assert nbytes > 0
        with pytest.raises(ValueError, match=rf"^{op}: workspace must hold at least"):
            fn(_cap(go), _cap(other), _cap(target), *g, _cap(ws[: nbytes - 1]), 2)
        with pytest.raises(ValueError, match=rf"^{op}: stride must be >= 1"):
            fn(_cap(go), _cap(other), _cap(target), (0, 1), *g[1:], _cap(ws), 2)

    @pytest.mark.parametrize(
        "pass_, x_shape, w_shape, groups",
        [
            ("backward_input", (2, 3, 5, 5), (0, 3, 3, 3), 1),  # no filters
            ("backward_input", (2, 4, 5, 5), (0, 1, 3, 3), 4),  # no filters, depthwise
            ("backward_weight", (0, 3, 5, 5), (4, 3, 3, 3), 1),  # empty batch
            ("backward_weight", (0, 4, 5, 5), (8, 1, 3, 3), 4),  # empty batch, depthwise
        ],
        ids=["input_K0", "input_K0_depthwise", "weight_N0", "weight_N0_depthwise"],
    )
    def test_empty_reduction_writes_zeros(self, pass_, x_shape, w_shape, groups):
        """A gradient whose reduction is empty is zero: the kernel must write it, not leave
        what was in the buffer (here NaN). Rejecting the shape (naming it) is also fine."""
        x, w = torch.randn(x_shape), torch.randn(w_shape)
        go = torch.randn(x_shape[0], w_shape[0], 3, 3)
        target = x if pass_ == "backward_input" else w
        target.fill_(float("nan"))
        g = ((1, 1), (0, 0), (0, 0), (1, 1), groups)
        try:
            nbytes = _C.conv2d_workspace(pass_, _cap(x), _cap(w), _cap(go), *g, 2)
            ws = torch.empty(max(nbytes, 1), dtype=torch.uint8)
            other = w if pass_ == "backward_input" else x
            getattr(_C, "conv2d_" + pass_)(_cap(go), _cap(other), _cap(target), *g, _cap(ws), 2)
        except ValueError as e:
            assert "weight" in str(e) or "input" in str(e)
            return
        torch.testing.assert_close(target, torch.zeros_like(target), rtol=0, atol=0)

    def test_backward_bias_entry_point_rejects(self):
        go = torch.randn(2, 6, 5, 4)
        gb = torch.empty(6)
        _C.conv2d_backward_bias(_cap(go), _cap(gb), 2)
        torch.testing.assert_close(gb, go.sum((0, 2, 3)), **_tol(torch.float32, 40))
        op = "conv2d_backward_bias"
        with pytest.raises(ValueError, match=rf"^{op}: grad_bias must have shape \(6,\)"):
            _C.conv2d_backward_bias(_cap(go), _cap(torch.empty(5)), 2)
        with pytest.raises(TypeError, match=rf"^{op}: grad_bias must have dtype float32"):
            _C.conv2d_backward_bias(_cap(go), _cap(torch.empty(6, dtype=torch.float64)), 2)
        with pytest.raises(ValueError, match=rf"^{op}: grad_output must be 4-D"):
            _C.conv2d_backward_bias(_cap(go[0]), _cap(gb), 2)
        with pytest.raises(ValueError, match=rf"^{op}: grad_output must be contiguous or"):
            _C.conv2d_backward_bias(_cap(torch.randn(2, 6, 5, 8)[..., ::2]), _cap(gb), 2)
        with pytest.raises(ValueError, match=rf"^{op}: grad_bias must be contiguous"):
            _C.conv2d_backward_bias(_cap(go), _cap(torch.empty(12)[::2]), 2)
        with pytest.raises(ValueError, match=rf"^{op}: threads must be >= 1"):
            _C.conv2d_backward_bias(_cap(go), _cap(gb), 0)


# --------------------------------------------------------------------------------------------
# The GEMM paths under every ISA's micro-kernel (FASTCNN_ISA caps the choice at load, so each
# runs in a subprocess)
# --------------------------------------------------------------------------------------------


# Run in a fresh interpreter: every case forward (bias + ReLU, and plain), grad_input,
# grad_weight and grad_bias against F.conv2d and autograd, float32 and float64, NCHW and
# channels_last. Prints the ISA the process ran.
_GEMM_PATHS_SCRIPT = r"""
import json, sys, torch, torch.nn.functional as F, fastcnn

torch.manual_seed(0)
cases = json.loads(sys.argv[1])
for dtype in (torch.float32, torch.float64):
    for fmt in (torch.contiguous_format, torch.channels_last):
        for xs, ws, kw in cases:
            x = torch.randn(xs, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
            w = torch.randn(ws, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
            b = torch.randn(ws[0], dtype=dtype, requires_grad=True)
            for act in (None, "relu"):
                out = fastcnn.ops.conv2d(x, w, b, activation=act, **kw)
                ref = F.conv2d(x, w, b, **kw)
                ref = F.relu(ref) if act else ref
                go = torch.randn_like(ref)
                got = (out, *torch.autograd.grad(out, (x, w, b), go))
                want = (ref, *torch.autograd.grad(ref, (x, w, b), go))
                # tolerance for sums of up to `red` products of O(1) values
                red = max(ws[1] * ws[2] * ws[3], ws[0] * ws[2] * ws[3], xs[0] * out[0, 0].numel())
                if dtype == torch.float32:
                    tol = dict(rtol=1e-5, atol=1e-5 + 1e-6 * red)
                else:
                    tol = dict(rtol=1e-10, atol=1e-12 * red)
                names = ("output", "grad_input", "grad_weight", "grad_bias")
                for name, a, e in zip(names, got, want):
                    where = f"{name} {xs} {ws} {kw} {dtype} {fmt} {act}"
                    torch.testing.assert_close(a, e, **tol, msg=lambda m: f"{where}: {m}")
print(fastcnn.info()["isa"])
"""


def _gemm_cases() -> list:
    """Geometries that reach every tile remainder and every GEMM path of conv2d."""
    # K = 1..33 filters crosses every row remainder of mr (4, 6, 8) and column remainder of
    # nr (8, 16, 32); with 9 channels (>= 8) channels_last takes the positions-as-rows path
    # once K fills half a column panel. P = 3 * (K + 2) positions vary the column edges.
    cases = [[[2, 9, 3, k + 2], [k, 9, 3, 3], {"padding": 1}] for k in range(1, 34)]
    cases += [
        [[2, 64, 6, 7], [20, 64, 3, 3], {"padding": 1}],  # reduction 576 > one k block
        [[1, 70, 5, 9], [40, 70, 3, 3], {"padding": 1, "stride": 2}],  # strided, 630 long
        # channels_last with too few filters for positions as rows: NHWC tiles stored
        # transposed, the second k block added to the first
        [[2, 64, 7, 8], [12, 64, 3, 3], {"padding": 1, "stride": 2}],
        [[3, 1, 11, 13], [32, 1, 3, 3], {"padding": 1}],  # one input channel as GEMM
        [[2, 2, 9, 8], [16, 1, 3, 3], {"padding": 1, "groups": 2}],  # same, per group
        [[2, 24, 7, 9], [40, 24, 1, 1], {}],  # 1x1: backward-input stores into dX directly
        [[2, 24, 7, 9], [40, 24, 1, 1], {"stride": 2}],
        # channels_last 1x1: pixels read in place as A's rows, over two k blocks, per group
        [[1, 520, 3, 5], [20, 520, 1, 1], {}],
        [[2, 32, 5, 6], [40, 16, 1, 1], {"groups": 2}],
        [[1, 16, 12, 11], [24, 8, 3, 2], {"padding": (2, 1), "dilation": (2, 3), "groups": 2}],
        [[2, 3, 23, 21], [33, 3, 7, 7], {"padding": 3, "stride": 2}],  # stem: rows path
        [[1, 4, 12, 13], [17, 4, 5, 4], {"padding": (2, 1), "stride": (1, 2)}],  # rows
        [[2, 2, 9, 30], [70, 2, 7, 7], {"padding": (0, 3)}],  # rows, three filter panels
        [[1, 1, 9, 6], [8, 1, 9, 9], {"padding": 2}],  # rows, fewer positions than a tile
    ]
    return cases


@pytest.mark.parametrize("isa", ISAS)
def test_gemm_paths_every_isa(isa):
    run_under_isa(isa, _GEMM_PATHS_SCRIPT, _gemm_cases())


# Direct (GEMM-path) forwards under one ISA: each case is (input shape, filter shape, stride,
# padding, dilation), run in float32 and float64, NCHW without bias and channels_last with bias
# and the fused ReLU, against F.conv2d in float64. Prints the ISA the process ran.
_DIRECT_FORWARD_SCRIPT = r"""
import json, sys, torch, torch.nn.functional as F, fastcnn

torch.manual_seed(0)
with fastcnn.ops.use_conv_algorithm("direct"):
    for case in json.loads(sys.argv[1]):
        x_shape, w_shape, stride, pad, dil = case
        kw = dict(stride=stride, padding=pad, dilation=dil)
        for dtype in (torch.float32, torch.float64):
            for fmt in (torch.contiguous_format, torch.channels_last):
                x = torch.randn(x_shape, dtype=dtype).to(memory_format=fmt)
                w = torch.randn(w_shape, dtype=dtype)
                b = torch.randn(w_shape[0], dtype=dtype) if fmt == torch.channels_last else None
                act = "relu" if b is not None else None
                got = fastcnn.ops.conv2d(x, w, b, **kw, activation=act)
                want = F.conv2d(x.double(), w.double(), None if b is None else b.double(), **kw)
                want = (want.relu() if act else want).to(dtype)
                tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else {}
                torch.testing.assert_close(got, want, **tol, msg=lambda m: f"{case} {dtype}: {m}")
print(fastcnn.info()["isa"])
"""


# The forward's image packer: input rows gathered a vector at a time at strides 1 and 2
# (stride 2 with the three taps of a kernel row at once), other strides element by element,
# padding zeroed by column, vectors near a plane's first and last element gathered lane by
# lane. Widths around every ISA's vector width (4, 8 and 16 floats; 2, 4 and 8 doubles),
# padding up to 2 and dilation.
@pytest.mark.parametrize("isa", ISAS)
def test_image_packer_every_isa(isa):
    cases = [
        [[2, 5, 6, W], [7, 5, 3, 3], stride, pad, dil]
        for W in (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 40)
        for stride in (1, 2, 3)
        for pad, dil in ((0, 1), (1, 1), (2, 1), (2, 2))
        if W + 2 * pad - dil * 2 - 1 >= 0
    ]
    run_under_isa(isa, _DIRECT_FORWARD_SCRIPT, cases)


# Row windows: when an output row is exactly one column panel (Wo == nr: 32 and 16 floats, 16
# and 8 doubles on AVX-512 and AVX2) and kernel rows step one input row per output row, the
# forward reads its B panels in place from staged windows of input rows, the reduction ordered
# (r, c, s). Output widths 8, 16 and 32 cover every ISA's panel widths (the portable ISA's
# 32-byte panels never take the path and check the same shapes through the packer). Column
# taps 1, 3 and 5 wide (3: the three-tap gathers at column strides 1 and 2), column strides 1-3,
# column padding and dilation, one and three channels, 1- and 3-tall kernels with and without
# row padding, and enough rows for several column chunks.
@pytest.mark.parametrize("isa", ISAS)
def test_row_windows_every_isa(isa):
    cases = [
        [
            [2, C, 23, W],
            [9, C, R, S],
            [1, sw],
            [ph, pw],
            [1, dw],
        ]
        for Wo in (8, 16, 32)
        for C in (1, 3)
        for R, ph in ((1, 0), (3, 1))
        for S in (1, 3, 5)
        for sw in (1, 2, 3)
        for pw in (0, 2)
        for dw in (1, 2)
        if (W := (Wo - 1) * sw + dw * (S - 1) + 1 - 2 * pw) >= 1
    ]
    run_under_isa(isa, _DIRECT_FORWARD_SCRIPT, cases)


# The fused ReLU on every forward path under one ISA: a NaN bias keeps its filter's outputs
# NaN, -inf zeroes them and +inf stays, as torch.relu after the convolution. Prints the ISA.
_FUSED_RELU_SCRIPT = r"""
import json, sys, torch, torch.nn.functional as F, fastcnn

torch.manual_seed(0)
for x_shape, w_shape, kw in json.loads(sys.argv[1]):
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(x_shape).to(memory_format=fmt)
        w = torch.randn(w_shape).to(memory_format=fmt)
        b = torch.randn(w_shape[0])
        b[:3] = torch.tensor([float("nan"), float("-inf"), float("inf")])
        got = fastcnn.ops.conv2d(x, w, b, **kw, activation="relu")
        want = F.conv2d(x.double(), w.double(), b.double(), **kw).relu().float()
        where = f"{x_shape} {w_shape} {kw} {fmt}"
        torch.testing.assert_close(
            got, want, rtol=1e-4, atol=1e-4, equal_nan=True, msg=lambda m: f"{where}: {m}"
        )
print(fastcnn.info()["isa"])
"""


# Winograd, the stride-2 stem, the rows path, depthwise, the GEMM (strided, and 1x1 with
# pixels as rows): each applies the ReLU in its own epilogue, over vectors of its own width.
@pytest.mark.parametrize("isa", ISAS)
def test_fused_relu_every_path_every_isa(isa):
    cases = [
        [[2, 16, 13, 14], [16, 16, 3, 3], {"padding": 1}],
        [[2, 3, 23, 21], [16, 3, 7, 7], {"padding": 3, "stride": 2}],
        [[2, 2, 9, 30], [20, 2, 7, 7], {"padding": [0, 3]}],
        [[2, 32, 9, 10], [32, 1, 3, 3], {"padding": 1, "groups": 32}],
        [[2, 9, 6, 7], [12, 9, 3, 3], {"padding": 1, "stride": 2}],
        [[2, 24, 7, 9], [40, 24, 1, 1], {}],
    ]
    run_under_isa(isa, _FUSED_RELU_SCRIPT, cases)
