"""fastcnn.ops.global_avg_pool2d against adaptive_avg_pool2d / mean and the reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch.utils.dlpack import to_dlpack

import fastcnn
from fastcnn import _C
from fastcnn.ops import _reference as R

DTYPES = [torch.float32, torch.float64]
LAYOUTS = ["contiguous", "channels_last", "strided", "permuted"]
CL = torch.channels_last
SHAPES = [(2, 3, 7, 5), (1, 16, 1, 1), (3, 1, 4, 9), (2, 40, 13, 11)]


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    x = x.detach()
    if layout == "contiguous":
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=CL)
    if layout == "strided":  # every other column of a wider buffer
        out = torch.empty(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype)[..., ::2]
    else:  # "permuted": dense, but neither NCHW nor NHWC
        out = torch.empty_like(x.transpose(-1, -2).contiguous()).transpose(-1, -2)
    return out.copy_(x)


ISAS = ["generic", "avx2", "avx512"]

# Every ISA's sums against torch, in a subprocess with FASTCNN_ISA set: planes of 49, 1 and
# 203 elements (whole vectors and scalar tails, NCHW), 83 channels (NHWC blocks of 4 vectors,
# single vectors and a scalar tail), and a large offset that float32 sums would lose.
_ISA_CHECK = textwrap.dedent(
    """
    import json, torch, torch.nn.functional as F, fastcnn
    torch.manual_seed(0)
    checked = 0
    for dtype in (torch.float32, torch.float64):
        for fmt in (torch.contiguous_format, torch.channels_last):
            for shape in ((3, 83, 7, 7), (2, 83, 1, 1), (2, 5, 7, 29), (1, 16, 64, 64)):
                x = (torch.randn(shape, dtype=torch.float64) * 3 + 1000).to(dtype)
                x = x.contiguous(memory_format=fmt).requires_grad_()
                out = fastcnn.ops.global_avg_pool2d(x)
                exact = x.detach().double().mean((2, 3))
                torch.testing.assert_close(out.double(), exact, rtol=0, atol=1e-4)
                torch.testing.assert_close(out, F.adaptive_avg_pool2d(x.detach(), 1).flatten(1))
                grad = torch.randn_like(out)
                gx, = torch.autograd.grad(out, x, grad)
                expected = (grad[:, :, None, None] / (shape[2] * shape[3])).expand(shape)
                torch.testing.assert_close(gx, expected)
                assert gx.is_contiguous(memory_format=fmt)
                checked += 1
    print(json.dumps({"isa": fastcnn.info()["isa"], "checked": checked}))
    """
)


@pytest.mark.parametrize("isa", ISAS)
def test_every_isa_matches_torch(isa):
    order = {name: i for i, name in enumerate(ISAS)}
    native = fastcnn.info()["isa"]
    if order[isa] > order[native]:
        pytest.skip(f"this CPU runs {native}, not {isa}")
    env = {**os.environ, "FASTCNN_ISA": isa}
    proc = subprocess.run(
        [sys.executable, "-c", _ISA_CHECK], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"isa": isa, "checked": 2 * 2 * 4}


def _torch_gap(x: torch.Tensor, keepdim: bool) -> torch.Tensor:
    out = F.adaptive_avg_pool2d(x, 1)
    return out if keepdim else out.flatten(1)


class TestGlobalAvgPool2d:
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("layout", LAYOUTS)
    @pytest.mark.parametrize("shape", SHAPES)
    @pytest.mark.parametrize("keepdim", [False, True])
    def test_forward_backward(self, dtype, layout, shape, keepdim):
        x = _layout(torch.randn(shape, dtype=dtype) * 3 + 1, layout).requires_grad_()
        xt = x.detach().clone().requires_grad_()
        out = fastcnn.ops.global_avg_pool2d(x, keepdim=keepdim)
        expected = _torch_gap(xt, keepdim)
        n, c = shape[:2]
        assert out.shape == ((n, c, 1, 1) if keepdim else (n, c))
        assert out.dtype == dtype
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(out, R.global_avg_pool2d(x.detach(), keepdim))
        torch.testing.assert_close(out, x.detach().mean(dim=(2, 3), keepdim=keepdim))

        grad = torch.randn_like(expected)
        out.backward(grad)
        expected.backward(grad)
        torch.testing.assert_close(x.grad, xt.grad)
        xr = x.detach().clone().requires_grad_()
        R.global_avg_pool2d(xr, keepdim).backward(grad)
        torch.testing.assert_close(x.grad, xr.grad)
        assert x.grad.shape == x.shape
        for fmt in (torch.contiguous_format, CL):  # the gradient's layout is torch's
            assert x.grad.is_contiguous(memory_format=fmt) == xt.grad.is_contiguous(
                memory_format=fmt
            )

    def test_float32_accuracy(self):
        """A large plane with a big offset: float32 results stay close to the float64 mean."""
        x = torch.randn(2, 3, 64, 64, dtype=torch.float64) + 1000
        out = fastcnn.ops.global_avg_pool2d(x.float())
        torch.testing.assert_close(out.double(), x.float().double().mean((2, 3)), rtol=0, atol=1e-4)

    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    @pytest.mark.parametrize("keepdim", [False, True])
    def test_empty_batch(self, layout, keepdim):
        x = _layout(torch.randn(0, 4, 5, 6), layout).requires_grad_()
        out = fastcnn.ops.global_avg_pool2d(x, keepdim=keepdim)
        assert out.shape == _torch_gap(x.detach(), keepdim).shape
        out.backward(torch.ones(out.shape))
        assert x.grad.shape == x.shape
        x.grad = None
        fastcnn.ops.global_avg_pool2d(x, keepdim=keepdim).sum().backward()  # expanded grad
        assert x.grad.shape == x.shape

    def test_zero_channels(self):
        x = torch.randn(2, 0, 5, 6, requires_grad=True)
        out = fastcnn.ops.global_avg_pool2d(x)
        assert out.shape == _torch_gap(x.detach(), False).shape == (2, 0)
        out.sum().backward()
        assert x.grad.shape == x.shape

    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    @pytest.mark.parametrize("keepdim", [False, True])
    def test_gradcheck(self, layout, keepdim):
        x = _layout(torch.randn(2, 3, 4, 5, dtype=torch.float64), layout).requires_grad_()
        assert torch.autograd.gradcheck(
            lambda t: fastcnn.ops.global_avg_pool2d(t, keepdim=keepdim), (x,)
        )

    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    def test_opcheck(self, layout):
        x = _layout(torch.randn(2, 3, 4, 5), layout).requires_grad_()
        torch.library.opcheck(torch.ops.fastcnn.global_avg_pool2d.default, (x,))
        grad = torch.randn(2, 3)
        torch.library.opcheck(
            torch.ops.fastcnn.global_avg_pool2d_backward.default,
            (grad, [2, 3, 4, 5], layout == "channels_last"),
        )

    @pytest.mark.parametrize("keepdim", [False, True])
    def test_compile(self, keepdim):
        def fn(t):
            return fastcnn.ops.global_avg_pool2d(t.relu(), keepdim=keepdim) * 3

        x = torch.randn(2, 5, 6, 7)
        compiled = torch.compile(fn, fullgraph=True)
        xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
        ye, yc = fn(xe), compiled(xc)
        torch.testing.assert_close(yc, ye)
        torch.testing.assert_close(yc, _torch_gap(x.relu(), keepdim) * 3)
        g = torch.randn_like(ye)
        ye.backward(g)
        yc.backward(g)
        torch.testing.assert_close(xc.grad, xe.grad)

    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    def test_threads_independent(self, layout):
        x = _layout(torch.randn(8, 64, 16, 16), layout)
        grad = torch.randn(8, 64)
        before = torch.get_num_threads()
        results = []
        try:
            for nt in (1, 2):
                torch.set_num_threads(nt)
                xi = x.clone(memory_format=torch.preserve_format).requires_grad_()
                out = fastcnn.ops.global_avg_pool2d(xi)
                out.backward(grad)
                results.append((out, xi.grad))
        finally:
            torch.set_num_threads(before)
        assert torch.equal(results[0][0], results[1][0])
        assert torch.equal(results[0][1], results[1][1])
        torch.testing.assert_close(results[0][0], x.mean((2, 3)))

    def test_double_backward_raises(self):
        x = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
        out = fastcnn.ops.global_avg_pool2d(x)
        grad = torch.ones_like(out, requires_grad=True)  # the gradient depends on it only
        (gx,) = torch.autograd.grad(out, x, grad, create_graph=True)
        with pytest.raises(RuntimeError, match="global_avg_pool2d: double backward"):
            gx.sum().backward()

    @pytest.mark.parametrize(
        "x, exc, match",
        [
            (torch.randn(3, 4, 5), ValueError, "input must be 4-D .* got shape \\(3, 4, 5\\)"),
            (torch.randn(1, 3, 4, 5, 6), ValueError, "input must be 4-D"),
            (torch.randn(3), ValueError, "input must be 4-D"),
            (torch.ones(1, 2, 3, 3, dtype=torch.int32), TypeError, "input must be a floating"),
            (torch.ones(1, 2, 3, 3, dtype=torch.bool), TypeError, "input must be a floating"),
            (torch.ones(1, 2, 3, 3, dtype=torch.bfloat16), TypeError, "input must be float32"),
            ([1.0, 2.0], TypeError, "input must be a Tensor, got list"),
            (torch.randn(1, 2, 0, 3), ValueError, "input must have a non-empty H x W plane"),
            (torch.randn(2, 2, 3, 0), ValueError, "input must have a non-empty H x W plane"),
            (torch.randn(0, 2, 0, 0), ValueError, "input must have a non-empty H x W plane"),
        ],
    )
    def test_errors(self, x, exc, match):
        with pytest.raises(exc, match=f"global_avg_pool2d: {match}"):
            fastcnn.ops.global_avg_pool2d(x)

    def test_binding_checks(self):
        x = torch.randn(2, 3, 4, 5)
        with pytest.raises(
            ValueError, match="global_avg_pool2d: output must have shape \\(2, 3\\)"
        ):
            _C.global_avg_pool2d_forward(to_dlpack(x), to_dlpack(torch.empty(3, 2)), 1)
        with pytest.raises(TypeError, match="global_avg_pool2d: output must have dtype float32"):
            _C.global_avg_pool2d_forward(to_dlpack(x), to_dlpack(torch.empty(2, 3).double()), 1)
        with pytest.raises(ValueError, match="global_avg_pool2d_backward: grad_output must have"):
            _C.global_avg_pool2d_backward(to_dlpack(torch.ones(2, 4)), to_dlpack(x), 1)
        with pytest.raises(ValueError, match="threads must be >= 1"):
            _C.global_avg_pool2d_forward(to_dlpack(x), to_dlpack(torch.empty(2, 3)), 0)
