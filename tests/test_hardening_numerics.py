"""NaN and Inf propagate through every op, forward and backward, as they do through torch's
own ops; and the CPU kernels take float32 and float64 only (half precision raises)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.dlpack import to_dlpack

import fastcnn
from fastcnn import _C
from fastcnn.ops import use_conv_algorithm

DTYPES = [torch.float32, torch.float64]
FORMATS = [torch.contiguous_format, torch.channels_last]
SPECIALS = [math.nan, math.inf, -math.inf]


def _with_specials(shape, dtype, fmt, count=6) -> torch.Tensor:
    """randn with NaN, +Inf and -Inf written at random positions (each appears at least
    once when count >= 3)."""
    x = torch.randn(shape, dtype=dtype)
    flat = x.view(-1)
    where = torch.randperm(flat.numel())[:count]
    for i, pos in enumerate(where.tolist()):
        flat[pos] = SPECIALS[i % len(SPECIALS)]
    return x.contiguous(memory_format=fmt)


def _run(fn, *inputs, grad_out=None):
    """fn's output and the gradients of every input for the upstream gradient `grad_out`
    (which may hold NaN/Inf too), in torch's autograd."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    out.backward(grad_out)
    return out.detach(), [t.grad for t in leaves]


def _assert_same(got, want):
    """Same values, and NaN/Inf exactly where torch has them."""
    assert torch.equal(got.isnan(), want.isnan()), "NaN positions differ from torch"
    assert torch.equal(got.isinf() & (got > 0), want.isinf() & (want > 0)), "+Inf positions differ"
    assert torch.equal(got.isinf() & (got < 0), want.isinf() & (want < 0)), "-Inf positions differ"
    tol = {"rtol": 1e-4, "atol": 1e-4} if got.dtype == torch.float32 else {}
    torch.testing.assert_close(got, want, equal_nan=True, **tol)


def _compare(fast, ref, *inputs, grad_out):
    out, grads = _run(fast, *inputs, grad_out=grad_out)
    out_ref, grads_ref = _run(ref, *inputs, grad_out=grad_out)
    _assert_same(out, out_ref)
    for g, g_ref in zip(grads, grads_ref):
        _assert_same(g, g_ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", FORMATS, ids=["nchw", "nhwc"])
class TestSpecialValues:
    def test_relu(self, dtype, fmt):
        x = _with_specials((2, 3, 5, 4), dtype, fmt)
        _compare(fastcnn.ops.relu, torch.relu, x, grad_out=_with_specials(x.shape, dtype, fmt))

    def test_guided_relu(self, dtype, fmt):
        x = _with_specials((2, 3, 5, 4), dtype, fmt)
        dy = _with_specials(x.shape, dtype, fmt)
        out, (dx,) = _run(fastcnn.ops.guided_relu, x, grad_out=dy)
        _assert_same(out, torch.relu(x))
        # Guided backprop: torch's ReLU gradient, then clamped at 0 (clamp keeps NaN).
        _, (relu_dx,) = _run(torch.relu, x, grad_out=dy)
        _assert_same(dx, relu_dx.clamp(min=0))

    @pytest.mark.parametrize("activation", [None, "relu"])
    @pytest.mark.parametrize(
        "groups, channels, stride, kernel",
        [
            (1, 6, (1, 2), 3),
            (3, 6, (1, 2), 3),
            (1, 9, 1, 3),
            (1, 3, 2, 7),
            (16, 16, 1, 3),
            (6, 6, (2, 1), 3),
            (6, 6, 1, 9),
            (1, 9, 2, 3),
        ],
        ids=["gemm", "groups", "stride1", "stem", "dw", "dw-stride2", "dw-81-taps", "phases"],
    )
    def test_conv2d(self, dtype, fmt, activation, groups, channels, stride, kernel):
        """Stride 1 runs backward-input as a forward convolution (strided, with 8 channels and
        more, phase by phase: with these weights it keeps the exact path), the stem on the rows
        path, depthwise on its vector kernels, or on its loops (NHWC with fewer channels than a
        vector, more than 64 taps). Torch's exact pattern is the direct algorithm's promise:
        the Winograd paths keep only non-finite outputs non-finite (test_conv2d_winograd.py,
        test_conv2d_stem.py), so the stem runs forced direct."""
        filters = max(6, groups)
        x = _with_specials((2, channels, 9, 8), dtype, fmt, count=3)
        w = _with_specials(
            (filters, channels // groups, kernel, kernel), dtype, torch.contiguous_format, count=3
        )
        b = torch.tensor([0.5, math.nan, math.inf, -math.inf, 0.0, -1.0], dtype=dtype)
        b = b.repeat(math.ceil(filters / len(b)))[:filters]
        geometry = {"stride": stride, "padding": 1, "groups": groups}

        def fast(x, w, b):
            return fastcnn.ops.conv2d(x, w, b, **geometry, activation=activation)

        def ref(x, w, b):
            # Padding is explicit zeros, so an Inf or NaN weight over it gives NaN (IEEE:
            # Inf * 0), as torch computes on the padded input. (torch's own padded float32
            # path skips padded taps instead, and would give a finite value there.)
            y = F.conv2d(F.pad(x, (1, 1, 1, 1)), w, b, **{**geometry, "padding": 0})
            return torch.relu(y) if activation else y

        with torch.no_grad():
            shape = ref(x, w, b).shape
        dy = _with_specials(shape, dtype, fmt, count=3)
        with use_conv_algorithm("direct"):
            _compare(fast, ref, x, w, b, grad_out=dy)

    @pytest.mark.parametrize("geometry", [(3, 2, 1), (2, 2, 0)], ids=["3x3s2p1", "2x2s2"])
    def test_max_pool2d(self, dtype, fmt, geometry):
        kernel, stride, padding = geometry
        x = _with_specials((2, 3, 8, 7), dtype, fmt, count=9)

        def fast(x):
            return fastcnn.ops.max_pool2d(x, kernel, stride, padding)

        def ref(x):
            return F.max_pool2d(x, kernel, stride, padding)

        dy = torch.randn(ref(x).shape, dtype=dtype)
        _compare(fast, ref, x, grad_out=dy)

    def test_global_avg_pool2d(self, dtype, fmt):
        x = _with_specials((2, 8, 5, 3), dtype, fmt, count=9)
        x[1, 5, 0, 0], x[1, 5, 1, 1] = math.inf, -math.inf  # +Inf and -Inf in one plane: NaN
        dy = torch.tensor([[math.nan, math.inf, -math.inf, 1, 2, 3, 4, 5]] * 2, dtype=dtype)
        _compare(
            fastcnn.ops.global_avg_pool2d, lambda t: t.mean((2, 3)), x, grad_out=dy.contiguous()
        )


HALF = [torch.float16, torch.bfloat16]
OPS = {
    "conv2d": lambda x: fastcnn.ops.conv2d(x, torch.randn(4, 3, 3, 3, dtype=x.dtype)),
    "max_pool2d": lambda x: fastcnn.ops.max_pool2d(x, 2),
    "global_avg_pool2d": fastcnn.ops.global_avg_pool2d,
    "relu": fastcnn.ops.relu,
    "guided_relu": fastcnn.ops.guided_relu,
}


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("op", OPS)
def test_half_precision_raises_on_cpu(op, dtype):
    x = torch.randn(2, 3, 6, 6).to(dtype)
    with pytest.raises(TypeError, match=rf"{op}: input must be float32 or float64 .*{dtype}"):
        OPS[op](x)


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_raises_at_the_compiled_boundary(dtype):
    x = torch.randn(16).to(dtype)
    with pytest.raises(TypeError, match=r"relu: input must be float32 or float64 on the CPU"):
        _C.relu_forward(to_dlpack(x), to_dlpack(torch.empty_like(x)), 1)
    img = torch.randn(2, 3, 4, 4).to(dtype)
    with pytest.raises(TypeError, match=r"global_avg_pool2d: input must be float32 or float64"):
        _C.global_avg_pool2d_forward(to_dlpack(img), to_dlpack(torch.empty(2, 3).to(dtype)), 1)
