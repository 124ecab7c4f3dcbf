"""fastcnn.ops.max_pool2d against torch.nn.functional.max_pool2d and the pure-PyTorch reference."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.utils.dlpack import to_dlpack

import fastcnn
from fastcnn import _C
from fastcnn.ops import _reference as R

DTYPES = [torch.float32, torch.float64]
LAYOUTS = ["contiguous", "channels_last", "strided", "permuted"]
CL = torch.channels_last

# (kernel_size, stride, padding, dilation, ceil_mode)
GEOMETRIES = [
    (2, None, 0, 1, False),
    (3, 2, 1, 1, False),
    (3, 2, 1, 1, True),
    (3, 1, 1, 2, False),
    (1, 1, 0, 1, False),
    (4, 3, 2, 1, True),
    (3, 3, 0, 1, True),
    ((3, 2), (2, 1), (1, 0), (1, 2), False),
    ((2, 3), (1, 2), (0, 1), (2, 1), True),
    ((1, 4), (2, 3), (0, 2), (3, 1), True),
    (5, (), 2, 1, False),  # an empty stride means kernel_size, as in torch
]

# max_unpool2d knows no dilation, and needs an output size near its default.
# As the op takes them: a geometry without window offsets, then the two with them.
OFFSET_GEOMETRIES = [
    ([3, 2], [2, 1], [1, 1], [1, 2], True),
    ([3, 3], [2, 2], [1, 1], [1, 1], True),
    ([2, 2], [2, 2], [0, 0], [1, 1], False),
]
UNPOOL_GEOMETRIES = [*GEOMETRIES[:3], ((3, 2), (2, 1), (1, 0), 1, False)]


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """``x``'s values in the given memory layout (a leaf without grad)."""
    x = x.detach()
    if layout == "contiguous":
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=CL)
    if layout == "strided":  # every other column of a wider buffer
        wide = torch.empty(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype)
        out = wide[..., ::2]
    elif layout == "permuted":  # dense, but neither NCHW nor NHWC
        out = torch.empty_like(x.transpose(-1, -2).contiguous()).transpose(-1, -2)
    else:
        raise AssertionError(layout)
    out.copy_(x)
    assert not out.is_contiguous()
    assert out.dim() != 4 or not out.is_contiguous(memory_format=CL)
    return out


def _same_format(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    assert actual.is_contiguous() == expected.is_contiguous()
    if expected.dim() == 4:
        assert actual.is_contiguous(memory_format=CL) == expected.is_contiguous(memory_format=CL)


def _both(x: torch.Tensor, grad: torch.Tensor | None = None, **kw):
    """fastcnn's and torch's (out, indices, grad_input) for the same input, layout, geometry
    and output gradient (random unless given)."""
    results = []
    for fn in (fastcnn.ops.max_pool2d, F.max_pool2d):
        xi = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype).copy_(x.detach())
        xi.requires_grad_()
        res = fn(xi, **kw)
        out, idx = res if kw.get("return_indices") else (res, None)
        if grad is None:
            grad = torch.randn_like(out)
        out.backward(grad)
        results.append((out, idx, xi.grad))
    return results


def _pool_size(size, k, s, p, d, ceil):
    """Output size by torch's formula, written out here."""
    num = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)
    out = num // s + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


def _has_empty_window(size, k, s, p, d, out) -> bool:
    return any(not any(0 <= o * s - p + r * d < size for r in range(k)) for o in range(out))


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


class TestMaxPool2d:
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("layout", LAYOUTS)
    @pytest.mark.parametrize("geometry", GEOMETRIES)
    @pytest.mark.parametrize("return_indices", [False, True])
    def test_forward_backward(self, dtype, layout, geometry, return_indices):
        k, s, p, d, ceil = geometry
        kw = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
        x = _layout(torch.randn(2, 3, 11, 10, dtype=dtype), layout)
        (out, idx, gx), (t_out, t_idx, t_gx) = _both(x, return_indices=return_indices, **kw)

        torch.testing.assert_close(out, t_out, rtol=0, atol=0)
        _same_format(out, t_out)
        ref_kw = dict(kw, stride=s or None)
        ref_out, ref_idx = R.max_pool2d(x.contiguous(), return_indices=True, **ref_kw)
        torch.testing.assert_close(out, ref_out, rtol=0, atol=0)
        if return_indices:
            assert idx.dtype == torch.int64
            torch.testing.assert_close(idx, t_idx, rtol=0, atol=0)
            torch.testing.assert_close(idx, ref_idx, rtol=0, atol=0)
            _same_format(idx, t_idx)
        torch.testing.assert_close(gx, t_gx)
        _same_format(gx, t_gx)

    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    @pytest.mark.parametrize("geometry", GEOMETRIES[:-1])
    @pytest.mark.parametrize("return_indices", [False, True])
    def test_backward_reference(self, layout, geometry, return_indices):
        k, s, p, d, ceil = geometry
        kw = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
        x = _layout(torch.randn(2, 3, 11, 10, dtype=torch.float64), layout).requires_grad_()
        res = fastcnn.ops.max_pool2d(x, return_indices=return_indices, **kw)
        out = res[0] if return_indices else res
        grad = torch.randn_like(out)
        out.backward(grad)
        _, ref_idx = R.max_pool2d(x.detach(), return_indices=True, **kw)
        torch.testing.assert_close(x.grad, R.max_pool2d_backward(grad, x.detach(), ref_idx))
        # The same through autograd on the reference's forward.
        xr = x.detach().clone().requires_grad_()
        R.max_pool2d(xr, **kw).backward(grad)
        torch.testing.assert_close(x.grad, xr.grad)

    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    @pytest.mark.parametrize("geometry", UNPOOL_GEOMETRIES)
    def test_indices_unpool(self, layout, geometry):
        k, s, p, d, ceil = geometry
        x = _layout(torch.randn(2, 3, 9, 8), layout)
        out, idx = fastcnn.ops.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
        t_out, t_idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
        kw = dict(kernel_size=k, stride=s, padding=p, output_size=x.shape[-2:])
        unpooled = F.max_unpool2d(out, idx, **kw)
        torch.testing.assert_close(unpooled, F.max_unpool2d(t_out, t_idx, **kw))
        # Each nonzero of the unpooled plane sits where the input had that value.
        mask = unpooled != 0
        torch.testing.assert_close(unpooled[mask], x[mask])

    def test_stride_none_is_kernel(self):
        x = torch.randn(2, 3, 10, 9)
        for s in (None, []):
            torch.testing.assert_close(
                fastcnn.ops.max_pool2d(x, (3, 2), s), F.max_pool2d(x, (3, 2), (3, 2))
            )

    @pytest.mark.parametrize(
        "size, k, s, p", [(5, 2, 2, 1), (5, 3, 3, 1), (7, 4, 3, 2), (6, 2, 3, 0), (8, 3, 3, 1)]
    )
    def test_ceil_mode_drops_last_window(self, size, k, s, p):
        naive = math.ceil((size + 2 * p - k) / s) + 1
        expected = _pool_size(size, k, s, p, 1, True)
        assert naive == expected + 1  # the case where torch drops the last window
        x = torch.randn(2, 2, size, size + 1)
        out, idx = fastcnn.ops.max_pool2d(x, k, s, p, ceil_mode=True, return_indices=True)
        t_out, t_idx = F.max_pool2d(x, k, s, p, ceil_mode=True, return_indices=True)
        assert out.shape[-2] == t_out.shape[-2] == expected
        torch.testing.assert_close(out, t_out)
        torch.testing.assert_close(idx, t_idx)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    @pytest.mark.parametrize("values", ["constant", "few", "nan", "neg_inf", "all_neg_inf"])
    @pytest.mark.parametrize("return_indices", [False, True])
    @pytest.mark.parametrize(
        "geometry", [(3, 2, 1, 1, True), ((2, 3), 1, (1, 1), (2, 1), False), (2, 2, 0, 1, False)]
    )
    def test_special_values(self, dtype, layout, values, return_indices, geometry):
        """Ties, NaN and -inf: values, indices and gradients exactly as torch."""
        shape = (2, 3, 8, 9)
        if values == "constant":
            x = torch.full(shape, 1.5, dtype=dtype)
        elif values == "few":  # many ties among a few distinct values
            x = torch.randint(0, 3, shape).to(dtype)
        elif values == "nan":
            x = torch.randn(shape, dtype=dtype)
            x[torch.rand(shape) < 0.15] = math.nan
        elif values == "neg_inf":
            x = torch.randn(shape, dtype=dtype)
            x[torch.rand(shape) < 0.6] = -math.inf
        else:
            x = torch.full(shape, -math.inf, dtype=dtype)
        x = _layout(x, layout)
        k, s, p, d, ceil = geometry
        kw = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
        (out, idx, gx), (t_out, t_idx, t_gx) = _both(x, return_indices=return_indices, **kw)
        torch.testing.assert_close(out, t_out, rtol=0, atol=0, equal_nan=True)
        if values == "nan":
            assert out.isnan().any()
        if return_indices:
            torch.testing.assert_close(idx, t_idx, rtol=0, atol=0)
        ref_out, ref_idx = R.max_pool2d(x, return_indices=True, **kw)
        torch.testing.assert_close(out, ref_out, rtol=0, atol=0, equal_nan=True)
        if return_indices:
            torch.testing.assert_close(idx, ref_idx, rtol=0, atol=0)
        torch.testing.assert_close(gx, t_gx, rtol=0, atol=0)

    def test_empty_window_matches_reference(self):
        """A dilated window can miss the input entirely: -inf and no gradient, no index."""
        k, s, p, d = 2, 1, 1, 3
        assert _has_empty_window(2, k, s, p, d, _pool_size(2, k, s, p, d, False))
        x = torch.randn(1, 2, 2, 2, requires_grad=True)
        out, idx = fastcnn.ops.max_pool2d(x, k, s, p, d, return_indices=True)
        ref_out, ref_idx = R.max_pool2d(x.detach(), k, s, p, d, return_indices=True)
        torch.testing.assert_close(out, F.max_pool2d(x.detach(), k, s, p, d))
        torch.testing.assert_close(out, ref_out)
        torch.testing.assert_close(idx, ref_idx)
        out.backward(torch.ones_like(out))
        torch.testing.assert_close(x.grad, torch.zeros_like(x))

    @pytest.mark.parametrize("return_indices", [False, True])
    def test_unbatched(self, return_indices):
        x = torch.randn(3, 9, 7)
        (out, idx, gx), (t_out, t_idx, t_gx) = _both(
            x, kernel_size=3, stride=2, padding=1, return_indices=return_indices
        )
        assert out.shape == t_out.shape == (3, 5, 4)
        torch.testing.assert_close(out, t_out)
        if return_indices:
            assert idx.shape == t_idx.shape
            torch.testing.assert_close(idx, t_idx)
        torch.testing.assert_close(gx, t_gx)

    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    @pytest.mark.parametrize("return_indices", [False, True])
    def test_empty_batch(self, layout, return_indices):
        shape = (0, 3, 8, 7)
        x = _layout(torch.randn(shape), layout)
        (out, idx, gx), (t_out, t_idx, _) = _both(
            x, kernel_size=2, padding=1, return_indices=return_indices
        )
        assert out.shape == t_out.shape == (*shape[:2], 5, 4)
        if return_indices:
            assert idx.shape == t_idx.shape
        assert gx.shape == x.shape

    @pytest.mark.parametrize("return_indices", [False, True])
    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    @pytest.mark.parametrize(
        "geometry", [(2, None, 0, 1, False), ((3, 2), (2, 1), (1, 1), (2, 1), True)]
    )
    def test_gradcheck(self, return_indices, layout, geometry):
        k, s, p, d, ceil = geometry
        # Distinct values, far apart compared with gradcheck's eps: no ties, a stable argmax.
        x = torch.randperm(2 * 2 * 6 * 7, dtype=torch.float64).reshape(2, 2, 6, 7) / 7
        x = _layout(x, layout).requires_grad_()

        def fn(t):
            res = fastcnn.ops.max_pool2d(t, k, s, p, d, ceil, return_indices=return_indices)
            return res[0] if return_indices else res

        assert torch.autograd.gradcheck(fn, (x,))

    @pytest.mark.parametrize("return_indices", [False, True])
    @pytest.mark.parametrize("keep_offsets", [False, True])
    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    @pytest.mark.parametrize("geometry", OFFSET_GEOMETRIES)
    def test_opcheck(self, return_indices, keep_offsets, layout, geometry):
        x = _layout(torch.randn(2, 3, 7, 8), layout).requires_grad_()
        args = (*geometry, return_indices, keep_offsets)
        torch.library.opcheck(torch.ops.fastcnn.max_pool2d.default, (x, *args))
        out, saved = torch.ops.fastcnn.max_pool2d(x.detach(), *args)
        grad = torch.randn_like(out)
        indices = saved if saved.dim() == 4 else None
        torch.library.opcheck(
            torch.ops.fastcnn.max_pool2d_backward.default, (grad, x.detach(), indices, *geometry)
        )

    @pytest.mark.parametrize("geometry", OFFSET_GEOMETRIES)
    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    @pytest.mark.parametrize("size", [(7, 8), (8, 9), (2, 2), (3, 3), (9, 40)])
    def test_window_offsets(self, geometry, layout, size):
        """Offsets are kept exactly where the kernels have them (NCHW; 2x2/2 windows that
        tile the input, 3x3/2 windows), each the argmax tap of its window as torch's indices
        give it; the backward through them equals the one that recomputes the argmax."""
        k, s, p, d, ceil = geometry
        x = _layout(torch.randint(0, 4, (2, 3, *size)).float(), layout)  # ties
        if _pool_size(size[0], k[0], s[0], p[0], d[0], ceil) < 1:
            pytest.skip("empty output")
        out, offsets = torch.ops.fastcnn.max_pool2d(x, *geometry, False, True)
        t_out, t_idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
        torch.testing.assert_close(out, t_out, rtol=0, atol=0)
        ho, wo = out.shape[2:]
        tiles = k == [2, 2] and p == [0, 0] and 2 * ho <= size[0] and 2 * wo <= size[1]
        if layout == "channels_last" or s != [2, 2] or not (tiles or k == [3, 3]):
            assert offsets.numel() == 0
            return
        assert offsets.dtype == torch.uint8 and offsets.shape == out.shape
        rows = torch.arange(ho).view(ho, 1) * s[0] - p[0]
        cols = torch.arange(wo).view(1, wo) * s[1] - p[1]
        taps = (t_idx // size[1] - rows) * k[1] + (t_idx % size[1] - cols)
        torch.testing.assert_close(offsets.long(), taps, rtol=0, atol=0)
        grad = torch.randn_like(out)
        through = torch.ops.fastcnn.max_pool2d_backward(grad, x, offsets, *geometry)
        recomputed = torch.ops.fastcnn.max_pool2d_backward(grad, x, None, *geometry)
        torch.testing.assert_close(through, recomputed, rtol=0, atol=0)

    @pytest.mark.parametrize(
        "geometry, at, value, why",
        [
            (OFFSET_GEOMETRIES[1], (0, 0, 1, 1), 9, "no tap of a 3x3 window"),
            (OFFSET_GEOMETRIES[1], (0, 0, 0, 2), 1, "the padding row above the input"),
            (OFFSET_GEOMETRIES[1], (0, 0, 1, 0), 3, "the padding column left of the input"),
            (OFFSET_GEOMETRIES[1], (0, 0, 3, 1), 7, "the padding row below the input"),
            (OFFSET_GEOMETRIES[1], (0, 0, 1, 4), 4, "the padding column right of the input"),
            (OFFSET_GEOMETRIES[2], (1, 2, 2, 3), 4, "no tap of a 2x2 window"),
        ],
    )
    def test_bad_window_offsets(self, geometry, at, value, why):
        """Offsets that name no tap inside the input are refused, not followed."""
        x = torch.randn(2, 3, 7, 8)
        out, offsets = torch.ops.fastcnn.max_pool2d(x, *geometry, False, True)
        offsets[at] = value
        with pytest.raises(ValueError, match="window offsets must name a tap"):
            torch.ops.fastcnn.max_pool2d_backward(torch.ones_like(out), x, offsets, *geometry)

    def test_offsets_only_where_kept(self):
        x = torch.randn(1, 2, 6, 6)
        offsets = torch.zeros(1, 2, 6, 6, dtype=torch.uint8)
        with pytest.raises(ValueError, match="window offsets .* are kept only for"):
            torch.ops.fastcnn.max_pool2d_backward(
                torch.ones(1, 2, 6, 6), x, offsets, [3, 3], [1, 1], [1, 1], [1, 1], False
            )

    @pytest.mark.parametrize("return_indices", [False, True])
    def test_compile(self, return_indices):
        def fn(t):
            res = fastcnn.ops.max_pool2d(t, 3, 2, 1, ceil_mode=True, return_indices=return_indices)
            out = res[0] if return_indices else res
            return (out * 2).sin()

        x = torch.randn(2, 3, 9, 8)
        compiled = torch.compile(fn, fullgraph=True)
        xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
        ye, yc = fn(xe), compiled(xc)
        torch.testing.assert_close(yc, ye)
        g = torch.randn_like(ye)
        ye.backward(g)
        yc.backward(g)
        torch.testing.assert_close(xc.grad, xe.grad)
        torch.testing.assert_close(ye, torch.sin(2 * F.max_pool2d(x, 3, 2, 1, ceil_mode=True)))

    # Empty batches have their own test above.
    @settings(max_examples=40, deadline=None)
    @given(
        n=st.integers(1, 2),
        c=st.integers(1, 3),
        h=st.integers(1, 12),
        w=st.integers(1, 12),
        k=st.tuples(st.integers(1, 4), st.integers(1, 4)),
        s=st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))),
        d=st.tuples(st.integers(1, 3), st.integers(1, 3)),
        pad_frac=st.tuples(st.floats(0, 1), st.floats(0, 1)),
        ceil=st.booleans(),
        channels_last=st.booleans(),
        dtype=st.sampled_from(DTYPES),
        return_indices=st.booleans(),
    )
    def test_fuzz_geometry(
        self, n, c, h, w, k, s, d, pad_frac, ceil, channels_last, dtype, return_indices
    ):
        p = tuple(int(f * (kk // 2)) for f, kk in zip(pad_frac, k))
        ss = k if s is None else s
        sizes = [_pool_size(*a, ceil) for a in zip((h, w), k, ss, p, d)]
        x = torch.randn(n, c, h, w, dtype=dtype)
        if channels_last:
            x = x.contiguous(memory_format=CL)
        kw = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
        if min(sizes) < 1:
            with pytest.raises(RuntimeError):
                F.max_pool2d(x, **kw)
            with pytest.raises(ValueError, match="max_pool2d: the output would be empty"):
                fastcnn.ops.max_pool2d(x, **kw)
            return
        # torch's indices for windows that miss the input are not meaningful.
        assume(not any(_has_empty_window(*a) for a in zip((h, w), k, ss, p, d, sizes)))
        (out, idx, gx), (t_out, t_idx, t_gx) = _both(x, return_indices=return_indices, **kw)
        assert out.shape == t_out.shape == (n, c, *sizes)
        torch.testing.assert_close(out, t_out, rtol=0, atol=0)
        _same_format(out, t_out)
        if return_indices:
            torch.testing.assert_close(idx, t_idx, rtol=0, atol=0)
        torch.testing.assert_close(gx, t_gx)

    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    @pytest.mark.parametrize("return_indices", [False, True])
    def test_threads_independent(self, layout, return_indices):
        x = _layout(torch.randint(0, 50, (4, 16, 32, 32)).double(), layout)  # with ties
        grad = torch.randn(4, 16, 32, 32, dtype=torch.float64)
        before = torch.get_num_threads()
        results = []
        try:
            for nt in (1, 2):
                torch.set_num_threads(nt)
                xi = x.clone(memory_format=torch.preserve_format).requires_grad_()
                res = fastcnn.ops.max_pool2d(xi, 3, 1, 1, return_indices=return_indices)
                out = res[0] if return_indices else res
                out.backward(grad)
                results.append((out, res[1] if return_indices else None, xi.grad))
        finally:
            torch.set_num_threads(before)
        (o1, i1, g1), (o2, i2, g2) = results
        assert torch.equal(o1, o2) and torch.equal(g1, g2)
        if return_indices:
            assert torch.equal(i1, i2)
        t_out, t_idx = F.max_pool2d(x, 3, 1, 1, return_indices=True)
        torch.testing.assert_close(o1, t_out)
        if return_indices:
            torch.testing.assert_close(i1, t_idx)

    def test_double_backward_raises(self):
        x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
        out = fastcnn.ops.max_pool2d(x, 2)
        (gx,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
        with pytest.raises(RuntimeError, match="max_pool2d: double backward"):
            gx.sum().backward()

    @pytest.mark.parametrize(
        "x, kw, exc, match",
        [
            (torch.randn(8, 8), {}, ValueError, "input must be 3-D or 4-D .* got shape \\(8, 8\\)"),
            (torch.randn(1, 1, 1, 8, 8), {}, ValueError, "input must be 3-D or 4-D"),
            (torch.ones(1, 1, 8, 8, dtype=torch.int64), {}, TypeError, "input must be a floating"),
            (torch.ones(1, 1, 8, 8, dtype=torch.bool), {}, TypeError, "input must be a floating"),
            (torch.ones(1, 1, 8, 8, dtype=torch.float16), {}, TypeError, "input must be float32"),
            ([[[[1.0]]]], {}, TypeError, "input must be a Tensor, got list"),
            (torch.randn(1, 1, 8, 8), dict(kernel_size=0), ValueError, "kernel_size must be >= 1"),
            (torch.randn(1, 1, 8, 8), dict(kernel_size=(2, -1)), ValueError, "kernel_size must be"),
            (torch.randn(1, 1, 8, 8), dict(stride=0), ValueError, "stride must be >= 1"),
            (torch.randn(1, 1, 8, 8), dict(stride=(1, -2)), ValueError, "stride must be >= 1"),
            (torch.randn(1, 1, 8, 8), dict(dilation=0), ValueError, "dilation must be >= 1"),
            (torch.randn(1, 1, 8, 8), dict(padding=-1), ValueError, "padding must be >= 0"),
            (torch.randn(1, 1, 8, 8), dict(padding=(0, 2)), ValueError, "padding must be at most"),
            (
                torch.randn(1, 1, 8, 8),
                dict(kernel_size=3, padding=2, dilation=2),
                ValueError,
                "padding must be at most half",
            ),
            (torch.randn(1, 1, 2, 8), dict(kernel_size=3), ValueError, "the output would be empty"),
            (
                torch.randn(1, 1, 4, 4),
                dict(kernel_size=3, dilation=2),
                ValueError,
                "the output would be empty",
            ),
        ],
    )
    def test_errors(self, x, kw, exc, match):
        kw = {"kernel_size": 2, **kw}
        with pytest.raises(exc, match=f"max_pool2d: {match}"):
            fastcnn.ops.max_pool2d(x, **kw)
        if isinstance(x, torch.Tensor) and x.dtype in (torch.float32, torch.float64):
            with pytest.raises(RuntimeError):  # torch rejects the same arguments
                F.max_pool2d(x, **kw)

    @pytest.mark.parametrize("kernel_size", ["2", (1, 2, 3), 2.0, (2.0, 2.0)])
    def test_bad_pair_type(self, kernel_size):
        with pytest.raises(TypeError, match="max_pool2d: kernel_size must be an int or a pair"):
            fastcnn.ops.max_pool2d(torch.randn(1, 1, 8, 8), kernel_size)


ISAS = ["generic", "avx2", "avx512"]

# Every ISA's kernels against torch and the reference, in a subprocess with FASTCNN_ISA set.
# Rows of up to 75 columns give each ISA whole vectors of outputs (16 floats for AVX-512)
# beside scalar borders and tails; 83 channels give NHWC blocks of 4 vectors, single vectors
# and a scalar tail. Strides 1, 2 and 3 take the contiguous, de-interleaving and gathering
# loads. Rows of 4500 columns take the NCHW values-only path (no indices) in several chunks,
# each starting at a different alignment. Values: distinct, ties (few distinct values), NaN,
# -inf, all -inf.
_ISA_CHECK = textwrap.dedent(
    """
    import json, math, sys, torch, torch.nn.functional as F, fastcnn
    from fastcnn.ops import _reference as R
    torch.manual_seed(0)
    geometries = [
        (3, 2, 1, 1, False), (2, 2, 0, 1, False), (3, 1, 1, 1, False), (3, 3, 1, 1, True),
        ((3, 2), (2, 1), (1, 0), (1, 2), True), ((2, 3), (1, 2), (1, 1), (2, 1), True),
        (3, 2, 0, 1, True), (3, 2, (0, 1), 1, False),
    ]
    # 2x2/2 windows tile a 40 x 40 image: the NHWC backward stores instead of adding; one
    # image that large is split over threads by channels. The NCHW 2x2/2 backward writes
    # through: 37 outputs a row take vectors and an overlapping last one, 6 take the scalar
    # loop; odd H and W leave a row and a column outside every window. The NCHW 3x3/2
    # backward gathers by vectors of outputs: 64 columns give 32 or 31 outputs a row (whole
    # vectors and one short of them), 4 columns fewer outputs than a vector, 1026 columns
    # 512 outputs without padding (the most its buffers hold) and 513 with; 4500 columns
    # take the general backward. With a gradient
    # needed, NCHW 2x2/2 and 3x3/2 windows keep offsets for the backward; every backward is
    # also run recomputing the argmax.
    torch.set_num_threads(2)
    layouts = [
        (torch.contiguous_format, (2, 3, 9, 75)),
        (torch.contiguous_format, (2, 3, 9, 13)),
        (torch.contiguous_format, (1, 2, 6, 64)),
        (torch.contiguous_format, (1, 2, 5, 4)),
        (torch.contiguous_format, (1, 1, 3, 1026)),
        (torch.contiguous_format, (1, 1, 3, 4500)),
        (torch.channels_last, (2, 83, 7, 9)),
        (torch.channels_last, (1, 83, 40, 40)),
    ]
    def pair(v):
        return [v, v] if isinstance(v, int) else list(v)
    def values(kind, shape, dtype):
        x = torch.randn(shape, dtype=dtype)
        if kind == "ties":
            x = torch.randint(0, 3, shape).to(dtype)
        elif kind == "nan":
            x[torch.rand(shape) < 0.1] = math.nan
        elif kind == "neg_inf":
            x[torch.rand(shape) < 0.6] = -math.inf
        elif kind == "all_neg_inf":
            x.fill_(-math.inf)
        return x
    checked = 0
    for dtype in (torch.float32, torch.float64):
        for fmt, shape in layouts:
            for kind in ("randn", "ties", "nan", "neg_inf", "all_neg_inf"):
                x = values(kind, shape, dtype).contiguous(memory_format=fmt)
                for k, s, p, d, ceil in geometries:
                    kw = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
                    t_out, t_idx = F.max_pool2d(x, return_indices=True, **kw)
                    ref_out, ref_idx = R.max_pool2d(x, return_indices=True, **kw)
                    grad = torch.randn_like(t_out)
                    xt = x.clone().requires_grad_()
                    t_gx, = torch.autograd.grad(F.max_pool2d(xt, **kw), xt, grad)
                    for return_indices in (False, True):
                        xi = x.clone().requires_grad_()
                        res = fastcnn.ops.max_pool2d(xi, return_indices=return_indices, **kw)
                        out = res[0] if return_indices else res
                        exact = dict(rtol=0, atol=0, equal_nan=True)
                        torch.testing.assert_close(out, t_out, **exact)
                        torch.testing.assert_close(out, ref_out, **exact)
                        assert out.is_contiguous(memory_format=fmt)
                        if return_indices:
                            torch.testing.assert_close(res[1], t_idx, rtol=0, atol=0)
                            torch.testing.assert_close(res[1], ref_idx, rtol=0, atol=0)
                        gx, = torch.autograd.grad(out, xi, grad)
                        torch.testing.assert_close(gx, t_gx)
                        assert gx.is_contiguous(memory_format=fmt)
                        if not return_indices:  # the argmax recomputed, no offsets kept
                            gx = torch.ops.fastcnn.max_pool2d_backward(
                                grad, x, None, *(pair(v) for v in (k, s, p, d)), ceil
                            )
                            torch.testing.assert_close(gx, t_gx)
                        checked += 1
    print(json.dumps({"isa": fastcnn.info()["isa"], "checked": checked}))
    """
)


def _run_under_isa(code: str, isa: str) -> dict:
    """Runs ``code`` in a Python subprocess with FASTCNN_ISA=isa and returns the JSON it
    prints last; skips the ISAs this CPU lacks."""
    order = {name: i for i, name in enumerate(ISAS)}
    native = fastcnn.info()["isa"]
    if order[isa] > order[native]:
        pytest.skip(f"this CPU runs {native}, not {isa}")
    env = {**os.environ, "FASTCNN_ISA": isa}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["isa"] == isa
    return result


@pytest.mark.parametrize("isa", ISAS)
def test_every_isa_matches_torch(isa):
    result = _run_under_isa(_ISA_CHECK, isa)
    assert result["checked"] == 2 * 8 * 5 * 8 * 2


def _backward_args(x, grad, indices, grad_input, geometry=((2, 2), (2, 2), (0, 0), (1, 1), False)):
    caps = [to_dlpack(t) if t is not None else None for t in (grad, x, indices, grad_input)]
    return (*caps, *geometry, 2)


class TestMaxPool2dBindings:
    """fastcnn._C checks its arguments again, so direct calls raise instead of crashing."""

    def test_direct_call_matches_torch(self):
        x = torch.randn(2, 3, 6, 8)
        out, idx = F.max_pool2d(x, 2, return_indices=True)
        grad = torch.randn_like(out)
        for indices in (idx, None):
            gx = torch.full_like(x, math.nan)
            _C.max_pool2d_backward(*_backward_args(x, grad, indices, gx))
            torch.testing.assert_close(gx, R.max_pool2d_backward(grad, x, idx))

    @pytest.mark.parametrize("bad", [48, 49, 10**12, -2, -(10**12)])
    def test_out_of_range_indices(self, bad):
        x = torch.randn(2, 3, 6, 8)
        out, idx = F.max_pool2d(x, 2, return_indices=True)
        idx = idx.clone()
        idx[1, 2, 1, 3] = bad
        gx = torch.zeros_like(x)
        with pytest.raises(ValueError, match="max_pool2d_backward: indices must lie in"):
            _C.max_pool2d_backward(*_backward_args(x, torch.ones_like(out), idx, gx))
        with pytest.raises(ValueError, match="indices"):
            torch.ops.fastcnn.max_pool2d_backward(
                torch.ones_like(out), x, idx, [2, 2], [2, 2], [0, 0], [1, 1], False
            )

    @pytest.mark.parametrize(
        "which, shape, match",
        [
            ("grad_input", (2, 3, 6, 7), "grad_input"),
            ("grad_input", (2, 3, 48), "grad_input"),
            ("grad_output", (2, 3, 3, 3), "grad_output must have shape \\(2, 3, 3, 4\\)"),
            ("grad_output", (2, 3, 12), "grad_output must be 4-D"),
            ("indices", (2, 3, 4, 3), "indices must have shape"),
        ],
    )
    def test_wrong_shapes(self, which, shape, match):
        x = torch.randn(2, 3, 6, 8)
        out, idx = F.max_pool2d(x, 2, return_indices=True)
        args = {"grad": torch.ones_like(out), "indices": idx, "grad_input": torch.zeros_like(x)}
        key = {"grad_output": "grad"}.get(which, which)
        args[key] = torch.zeros(shape, dtype=args[key].dtype)
        with pytest.raises(ValueError, match=f"max_pool2d_backward: {match}"):
            _C.max_pool2d_backward(*_backward_args(x, **args))

    def test_wrong_dtypes_and_threads(self):
        x = torch.randn(2, 3, 6, 8)
        out, idx = F.max_pool2d(x, 2, return_indices=True)
        grad, gx = torch.ones_like(out), torch.zeros_like(x)
        with pytest.raises(TypeError, match="max_pool2d_backward: indices must be"):
            _C.max_pool2d_backward(*_backward_args(x, grad, idx.int(), gx))
        with pytest.raises(TypeError, match="max_pool2d_backward: indices must be int64"):
            _C.max_pool2d_backward(*_backward_args(x, grad, idx.float(), gx))
        with pytest.raises(TypeError, match="grad_input must have dtype float32"):
            _C.max_pool2d_backward(*_backward_args(x, grad, idx, gx.double()))
        args = list(_backward_args(x, grad, idx, gx))
        args[-1] = 0
        with pytest.raises(ValueError, match="threads must be >= 1"):
            _C.max_pool2d_backward(*args)
        with pytest.raises(ValueError, match="max_pool2d: output must have shape"):
            _C.max_pool2d_forward(
                to_dlpack(x),
                to_dlpack(torch.empty(2, 3, 3, 3)),
                None,
                (2, 2),
                (2, 2),
                (0, 0),
                (1, 1),
                False,
                1,
            )
        with pytest.raises(ValueError, match="padding must be >= 0 and at most half"):
            _C.max_pool2d_backward(
                *_backward_args(x, grad, idx, gx, ((2, 2), (2, 2), (2, 0), (1, 1), False))
            )
