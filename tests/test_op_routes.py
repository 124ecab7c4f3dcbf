"""The two routes into every op: plain eager calls go straight to the implementation, anything
that could observe the call (modes, tracing, profiler, tensor subclasses) goes through
``torch.ops.fastcnn.*``. Both must give the same values, gradients and errors."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import fastcnn.ops as fo
from fastcnn.ops._op import _leading_tensors, _route


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


class _PassThrough(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _cases():
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    x = rand(2, 3, 9, 8)
    return {
        "conv2d": (lambda x, w, b: fo.conv2d(x, w, b, padding=1, activation="relu"),
                   (x, rand(4, 3, 3, 3), rand(4))),
        "max_pool2d": (lambda x: fo.max_pool2d(x, 3, 2, 1), (x,)),
        "global_avg_pool2d": (fo.global_avg_pool2d, (x,)),
        "relu": (fo.relu, (x,)),
        "guided_relu": (fo.guided_relu, (x,)),
    }  # fmt: skip


CASES = _cases()


def _run(name: str, through_dispatcher: bool):
    fn, args = CASES[name]
    leaves = [a.detach().clone().requires_grad_() for a in args]
    with _PassThrough() if through_dispatcher else contextlib.nullcontext():
        out = fn(*leaves)
        grads = torch.autograd.grad(out, leaves, torch.ones_like(out))
    route = type(out.grad_fn).__name__
    assert route.startswith("GeneratedBackwardFor_fastcnn" if through_dispatcher else "fastcnn_")
    return out.detach(), grads


@pytest.mark.parametrize("name", list(CASES))
def test_routes_agree(name):
    out_direct, grads_direct = _run(name, through_dispatcher=False)
    out_op, grads_op = _run(name, through_dispatcher=True)
    torch.testing.assert_close(out_direct, out_op, rtol=0, atol=0)
    for a, b in zip(grads_direct, grads_op):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_direct_only_for_plain_eager_cpu_tensors():
    x = torch.randn(2, 2)
    assert _route((x, None)) is False  # an absent optional tensor
    assert _route((torch.nn.Parameter(x),)) is True  # the direct route, with autograd
    with torch.no_grad():
        assert _route((torch.nn.Parameter(x),)) is False
    assert _route((x.to("meta"),)) is None
    with _PassThrough():
        assert _route((x,)) is None
    with _Recorder():
        assert _route((x,)) is None
    with torch.profiler.profile():
        assert _route((x,)) is None


def test_route_reads_each_schemas_tensor_arguments():
    schema = torch.ops.fastcnn.conv2d.default._schema
    assert _leading_tensors(schema) == 3  # input, weight, bias?
    assert _leading_tensors(torch.ops.fastcnn.relu_backward.default._schema) == 2
    late = torch._C.parse_schema("fastcnn::late(int groups, Tensor input) -> Tensor")
    with pytest.raises(TypeError, match="tensor arguments must come before all others"):
        _leading_tensors(late)


@pytest.mark.parametrize("name", list(CASES))
def test_dispatch_modes_see_the_op(name):
    fn, args = CASES[name]
    with _Recorder() as rec:
        fn(*args)
    assert any(op.startswith(f"fastcnn.{name}.") for op in rec.ops), rec.ops


def test_profiler_records_the_op():
    x = torch.randn(1, 3, 8, 8)
    with torch.profiler.profile() as prof:
        fo.relu(x)
    assert "fastcnn::relu" in {e.key for e in prof.key_averages()}


def test_fake_tensors_take_the_op():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        y = fo.conv2d(torch.empty(2, 3, 8, 8), torch.empty(4, 3, 3, 3), padding=1)
    assert y.shape == (2, 4, 8, 8)


@pytest.mark.parametrize("direct", [True, False])
def test_double_backward_raises_on_both_routes(direct):
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    with contextlib.nullcontext() if direct else _PassThrough():
        y = fo.relu(x)
        (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        with pytest.raises(RuntimeError, match="relu: double backward"):
            torch.autograd.grad(g.sum(), x)
