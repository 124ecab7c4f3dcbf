"""fastcnn.ops.relu and fastcnn.ops.guided_relu against torch.relu and the reference."""

from __future__ import annotations

import math

import pytest
import torch
from _isa import ISAS, run_under_isa  # tests/_isa.py (pytest puts tests/ on sys.path)
from torch.utils.dlpack import to_dlpack

import fastcnn
from fastcnn import _C
from fastcnn.ops import _reference as R

DTYPES = [torch.float32, torch.float64]
SHAPES = [(), (7,), (5, 6), (3, 4, 5), (2, 3, 4, 5), (2, 3, 2, 4, 3)]
LAYOUTS = ["contiguous", "strided", "transposed", "expanded"]
# (shape, layout) pairs: every layout on every rank it applies to.
CASES = [
    *[(s, lay) for s in SHAPES for lay in LAYOUTS if s or lay == "contiguous"],
    ((2, 3, 4, 5), "channels_last"),
    ((2, 3, 2, 4, 3), "channels_last_3d"),
]
OPS = ["relu", "guided_relu"]


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """``x``'s values in a layout: channels_last(_3d), a strided slice, a transposed (dense
    but permuted) view, or a broadcast (stride 0) view."""
    x = x.detach()
    if layout == "contiguous":
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "channels_last_3d":
        return x.contiguous(memory_format=torch.channels_last_3d)
    if layout == "strided":
        return torch.empty(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype)[..., ::2].copy_(x)
    if layout == "transposed":
        return x.transpose(0, -1).contiguous().transpose(0, -1)
    if layout == "expanded":  # every row the same: a zero stride
        return x[:1].expand_as(x)
    raise AssertionError(layout)


def _fastcnn(op: str):
    return getattr(fastcnn.ops, op)


def _leaf(x: torch.Tensor) -> torch.Tensor:
    """A leaf that requires grad with ``x``'s values and layout (zero strides become real)."""
    x = x.detach()
    if 0 in x.stride():
        x = x.contiguous()
    return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype).copy_(x).requires_grad_()


def _torch_grad(x: torch.Tensor, grad: torch.Tensor, op: str) -> torch.Tensor:
    """torch.relu's input gradient; for guided_relu then clamped at 0."""
    xt = x.detach().clone().requires_grad_()
    torch.relu(xt).backward(grad)
    return xt.grad.clamp(min=0) if op == "guided_relu" else xt.grad


class TestActivation:
    @pytest.mark.parametrize("op", OPS)
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape, layout", CASES, ids=str)
    def test_forward_backward(self, op, dtype, shape, layout):
        x = _layout(torch.randn(shape, dtype=dtype), layout)
        out = _fastcnn(op)(x)
        expected = torch.relu(x)
        assert out.shape == x.shape and out.dtype == dtype
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        torch.testing.assert_close(out, R.relu(x), rtol=0, atol=0)
        if layout in ("contiguous", "channels_last"):  # the fast layouts are kept
            assert out.stride() == expected.stride()

        xl = _leaf(x)
        grad = _layout(torch.randn(shape, dtype=dtype), layout)
        _fastcnn(op)(xl).backward(grad)
        torch.testing.assert_close(xl.grad, _torch_grad(x, grad, op), rtol=0, atol=0)
        ref = R.relu_backward(grad, torch.relu(x))
        if op == "guided_relu":
            ref = R.guided_relu_backward(grad, torch.relu(x))
            torch.testing.assert_close(xl.grad, grad * (grad > 0) * (x > 0), rtol=0, atol=0)
        torch.testing.assert_close(xl.grad, ref, rtol=0, atol=0)

    @pytest.mark.parametrize("op", OPS)
    @pytest.mark.parametrize("dtype", DTYPES)
    def test_streamed_outputs(self, op, dtype):
        """Operands of 64 MiB and more in all (on Intel CPUs, from the L3's size on, when that
        is smaller) are written with non-temporal stores: large tensors with special values,
        views starting off a 16-byte boundary (a scalar head before the vectors) and lengths
        that leave a scalar tail, exactly as torch."""
        specials = torch.tensor([math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, -1.0], dtype=dtype)
        n = (72 << 20) // (2 * dtype.itemsize) + 3  # forward: input + output over 64 MiB
        base = torch.randn(n + 1, dtype=dtype)
        base[torch.randint(0, n + 1, (1000,))] = specials[torch.randint(0, 7, (1000,))]
        x = base[1:]  # 4 or 8 bytes past the allocation's alignment
        grad = torch.randn(n, dtype=dtype)
        grad[torch.randint(0, n, (1000,))] = specials[torch.randint(0, 7, (1000,))]
        out = _fastcnn(op)(x)
        torch.testing.assert_close(out, torch.relu(x), rtol=0, atol=0, equal_nan=True)
        xl = _leaf(x)
        _fastcnn(op)(xl).backward(grad)
        expected = _torch_grad(x, grad, op)
        torch.testing.assert_close(xl.grad, expected, rtol=0, atol=0, equal_nan=True)
        # The ops allocate aligned outputs; through the bindings an output may start anywhere.
        y, dx = torch.empty(n + 1, dtype=dtype)[1:], torch.empty(n + 1, dtype=dtype)[1:]
        _C.relu_forward(to_dlpack(x), to_dlpack(y), 2)
        torch.testing.assert_close(y, torch.relu(x), rtol=0, atol=0, equal_nan=True)
        relu_x = torch.relu(x)
        _C.relu_backward(to_dlpack(grad), to_dlpack(relu_x), to_dlpack(dx), op == "guided_relu", 2)
        torch.testing.assert_close(dx, expected, rtol=0, atol=0, equal_nan=True)

    @pytest.mark.parametrize("op", OPS)
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    def test_special_values(self, op, dtype, layout):
        """NaN and +-inf in the input and in the gradient: exactly as torch.relu."""
        specials = torch.tensor([math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, -1.0], dtype=dtype)
        x = specials[torch.randint(0, 7, (2, 3, 4, 5))]
        grad = specials[torch.randint(0, 7, (2, 3, 4, 5))]
        x, grad = _layout(x, layout), _layout(grad, layout)
        out = _fastcnn(op)(x)
        torch.testing.assert_close(out, torch.relu(x), rtol=0, atol=0, equal_nan=True)
        assert out.isnan().sum() == x.isnan().sum() > 0
        xl = _leaf(x)
        _fastcnn(op)(xl).backward(grad)
        expected = _torch_grad(x, grad, op)
        torch.testing.assert_close(xl.grad, expected, rtol=0, atol=0, equal_nan=True)

    @pytest.mark.parametrize("op", OPS)
    def test_empty(self, op):
        for shape in [(0,), (0, 3, 4, 5), (2, 0, 3)]:
            x = torch.randn(shape, requires_grad=True)
            out = _fastcnn(op)(x)
            assert out.shape == x.shape
            out.sum().backward()
            assert x.grad.shape == x.shape

    def test_input_unchanged(self):
        x = torch.randn(3, 4)
        before = x.clone()
        out = fastcnn.ops.relu(x)
        assert out.data_ptr() != x.data_ptr()
        assert torch.equal(x, before)

    @pytest.mark.parametrize("op", OPS)
    @pytest.mark.parametrize(
        "shape, layout",
        [((5,), "contiguous"), ((5,), "strided"), ((2, 3, 4, 3), "channels_last")],
        ids=str,
    )
    def test_gradcheck(self, op, shape, layout):
        # Away from the kink at 0. gradcheck backpropagates unit (positive) vectors, where the
        # guided gradient equals the true one.
        x = torch.randn(shape, dtype=torch.float64)
        x = x + 0.1 * x.sign()
        x = _layout(x, layout).requires_grad_()
        assert torch.autograd.gradcheck(_fastcnn(op), (x,))

    def test_guided_differs_from_gradient(self):
        """With negative output gradients the guided rule is not the true gradient."""
        x = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64, requires_grad=True)
        fastcnn.ops.guided_relu(x).backward(torch.tensor([-1.0, 3.0, 5.0], dtype=torch.float64))
        torch.testing.assert_close(x.grad, torch.tensor([0.0, 3.0, 0.0], dtype=torch.float64))

    @pytest.mark.parametrize("op", OPS)
    @pytest.mark.parametrize(
        "shape, layout",
        [((7,), "contiguous"), ((2, 3, 4, 5), "channels_last"), ((3, 4), "transposed")],
        ids=str,
    )
    def test_opcheck(self, op, shape, layout):
        x = _layout(torch.randn(shape), layout).requires_grad_()
        torch.library.opcheck(getattr(torch.ops.fastcnn, op).default, (x,))
        y = torch.relu(x.detach())
        backward = getattr(torch.ops.fastcnn, f"{op}_backward").default
        torch.library.opcheck(backward, (torch.randn_like(y), y))

    @pytest.mark.parametrize("op", OPS)
    def test_compile(self, op):
        def fn(t):
            return _fastcnn(op)(t * 2 - 0.5).sum(dim=1)

        x = torch.randn(2, 5, 6, 7)
        compiled = torch.compile(fn, fullgraph=True)
        xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
        ye, yc = fn(xe), compiled(xc)
        torch.testing.assert_close(yc, ye)
        torch.testing.assert_close(ye, torch.relu(x * 2 - 0.5).sum(dim=1))
        g = torch.randn_like(ye)
        ye.backward(g)
        yc.backward(g)
        torch.testing.assert_close(xc.grad, xe.grad)

    @pytest.mark.parametrize("op", OPS)
    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    def test_threads_independent(self, op, layout):
        x = _layout(torch.randn(4, 32, 40, 40), layout)
        grad = torch.randn(4, 32, 40, 40)
        before = torch.get_num_threads()
        results = []
        try:
            for nt in (1, 2):
                torch.set_num_threads(nt)
                xi = _leaf(x)
                out = _fastcnn(op)(xi)
                out.backward(grad)
                results.append((out, xi.grad))
        finally:
            torch.set_num_threads(before)
        assert torch.equal(results[0][0], results[1][0])
        assert torch.equal(results[0][1], results[1][1])
        torch.testing.assert_close(results[0][1], _torch_grad(x, grad, op))

    @pytest.mark.parametrize("op", OPS)
    def test_double_backward_raises(self, op):
        x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
        out = _fastcnn(op)(x)
        grad = torch.randn_like(out, requires_grad=True)
        (gx,) = torch.autograd.grad(out, x, grad, create_graph=True)
        with pytest.raises(RuntimeError, match=f"fastcnn.ops.{op}: double backward"):
            gx.sum().backward()

    @pytest.mark.parametrize("op", OPS)
    @pytest.mark.parametrize(
        "x, exc, match",
        [
            ([1.0, -1.0], TypeError, "input must be a Tensor, got list"),
            (1.0, TypeError, "input must be a Tensor, got float"),
            (torch.ones(3, dtype=torch.int64), TypeError, "input must be a floating-point"),
            (torch.ones(3, dtype=torch.bool), TypeError, "input must be a floating-point"),
            (torch.ones(3, dtype=torch.complex64), TypeError, "input must be a floating-point"),
            (torch.ones(3, dtype=torch.float16), TypeError, "input must be float32 or float64"),
        ],
    )
    def test_errors(self, op, x, exc, match):
        with pytest.raises(exc, match=f"{op}: {match}"):
            _fastcnn(op)(x)

    def test_binding_checks(self):
        x = torch.randn(6)
        with pytest.raises(ValueError, match="relu: output must have shape \\(6,\\)"):
            _C.relu_forward(to_dlpack(x), to_dlpack(torch.empty(5)), 1)
        with pytest.raises(TypeError, match="relu: output must have dtype float32"):
            _C.relu_forward(to_dlpack(x), to_dlpack(torch.empty(6, dtype=torch.float64)), 1)
        with pytest.raises(ValueError, match="relu: input must be contiguous"):
            _C.relu_forward(to_dlpack(torch.randn(12)[::2]), to_dlpack(torch.empty(6)), 1)
        with pytest.raises(ValueError, match="guided_relu_backward: grad_input must have shape"):
            _C.relu_backward(to_dlpack(x), to_dlpack(x), to_dlpack(torch.empty(7)), True, 1)
        with pytest.raises(ValueError, match="relu_backward: threads must be >= 1"):
            _C.relu_backward(to_dlpack(x), to_dlpack(x), to_dlpack(torch.empty(6)), False, 0)


# Every ISA's ReLU kernels (cpu/<isa>/relu.cpp) against torch, exactly, in a fresh interpreter
# with FASTCNN_ISA set: element counts off every vector width, starts off the 64-byte grid
# (views one element in), NaN, signed zeros and infinities, and one size whose operands pass
# the streaming threshold (64 MB) on both passes. Prints the ISA the process ran.
_ISA_SCRIPT = """
import json, math, sys, torch, fastcnn
torch.manual_seed(0)
torch.set_num_threads(2)
for n, offset in json.loads(sys.argv[1]):
    for dtype in (torch.float32, torch.float64):
        if n * dtype.itemsize * 2 > 200 << 20:
            continue
        base = torch.randn(n + offset, dtype=dtype)
        base[::7] = math.nan
        base[1::11] = -0.0
        base[2::13] = 0.0
        base[3::17] = -math.inf
        x = base[offset:]
        y = torch.relu(x)
        g = torch.randn(n + offset, dtype=dtype)[offset:]
        g[::5] = math.nan
        exact = dict(rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(fastcnn.ops.relu(x), y, **exact)
        want = torch.ops.aten.threshold_backward(g, y, 0)
        torch.testing.assert_close(torch.ops.fastcnn.relu_backward(g, y), want, **exact)
        guided = torch.ops.fastcnn.guided_relu_backward(g, y)
        torch.testing.assert_close(guided, want.clamp(min=0), **exact)
print(fastcnn.info()["isa"])
"""

# (elements, offset of the view into its buffer)
_ISA_CASES = [[1, 0], [15, 1], [16, 0], [17, 3], [1000, 1], [70001, 2], [9_000_001, 1]]


@pytest.mark.parametrize("isa", ISAS)
def test_every_isa_matches_torch(isa):
    run_under_isa(isa, _ISA_SCRIPT, _ISA_CASES)
