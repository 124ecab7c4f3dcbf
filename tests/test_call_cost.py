"""What the per-call fast path relies on: the conv bindings size their workspace through a
provider in the same call, each thread reuses one small workspace whatever it holds from the
last call, and the shape checks moved into the shared shape functions still fire on every
route. Behaviour only; bench/bench_e2e.py times the calls."""

from __future__ import annotations

import threading

import pytest
import torch

import fastcnn.ops as fo
from fastcnn.ops._boundary import _C, capsule, workspace


def _conv_case(c, k, groups=1, size=9, dtype=torch.float32):
    """x, w, a gradient of the output, and the geometry of a 3x3 'same' convolution."""
    g = torch.Generator().manual_seed(c * 100 + k)
    x = torch.randn(2, c, size, size, generator=g, dtype=dtype)
    w = torch.randn(k, c // groups, 3, 3, generator=g, dtype=dtype)
    dy = torch.randn(2, k, size, size, generator=g, dtype=dtype)
    return x, w, dy, ((1, 1), (1, 1), (1, 1), (1, 1), groups)


# Winograd (C, K >= 8), the rows path (C <= 4 with many taps), the GEMM plan, depthwise, float64.
_CASES = {
    "winograd": dict(c=8, k=8),
    "rows": dict(c=3, k=16, size=30),
    "gemm": dict(c=5, k=6),
    "depthwise": dict(c=6, k=6, groups=6),
    "float64": dict(c=8, k=8, dtype=torch.float64),
}


def _run(pass_: str, x, w, dy, geometry, ws) -> torch.Tensor:
    """One conv pass through its binding with workspace ``ws`` (a capsule or a provider)."""
    if pass_ == "forward":
        out = torch.empty_like(dy)
        _C.conv2d_forward(capsule(x), capsule(w), None, capsule(out), *geometry, False, ws, 2)
    elif pass_ == "backward_input":
        out = torch.empty_like(x)
        _C.conv2d_backward_input(capsule(dy), capsule(w), capsule(out), *geometry, ws, 2)
    else:
        out = torch.empty_like(w)
        _C.conv2d_backward_weight(capsule(dy), capsule(x), capsule(out), *geometry, ws, 2)
    return out


def _bytes(pass_: str, x, w, dy, geometry) -> int:
    return _C.conv2d_workspace(pass_, capsule(x), capsule(w), capsule(dy), *geometry, 2)


def _filled(value: float):
    """A provider handing out a fresh workspace full of ``value``; records the sizes asked."""

    def provide(n):
        provide.asked.append(n)
        ws = torch.empty(n + 4, dtype=torch.uint8)  # a little more than asked, as the cache may
        ws[: n // 4 * 4].view(torch.float32).fill_(value)
        return capsule(ws)

    provide.asked = []
    return provide


_PASSES = ["forward", "backward_input", "backward_weight"]


@pytest.mark.parametrize("case", _CASES)
@pytest.mark.parametrize("pass_", _PASSES)
def test_results_do_not_depend_on_workspace_contents(case, pass_):
    """The cached workspace keeps the last call's data: a pass gives bit-identical results from
    a workspace of zeros and one of NaNs, and asks its provider once, for the queried size."""
    x, w, dy, geometry = _conv_case(**_CASES[case])
    need = _bytes(pass_, x, w, dy, geometry)
    results = []
    for value in (0.0, float("nan")):
        provide = _filled(value)
        results.append(_run(pass_, x, w, dy, geometry, provide))
        assert provide.asked == [need]
    assert not results[0].isnan().any()
    assert torch.equal(results[0], results[1])


@pytest.mark.parametrize("pass_", _PASSES)
def test_provider_and_capsule_give_the_same_result(pass_):
    x, w, dy, geometry = _conv_case(c=5, k=6)
    ws = torch.empty(_bytes(pass_, x, w, dy, geometry), dtype=torch.uint8)
    assert torch.equal(
        _run(pass_, x, w, dy, geometry, capsule(ws)), _run(pass_, x, w, dy, geometry, workspace)
    )


def test_bad_providers_raise():
    x, w, dy, geometry = _conv_case(c=5, k=6)
    with pytest.raises(ValueError, match=r"^conv2d: workspace must hold at least \d+ bytes"):
        _run("forward", x, w, dy, geometry, lambda n: capsule(torch.empty(8, dtype=torch.uint8)))
    with pytest.raises(TypeError, match=r"^conv2d_backward_input: workspace must be an unused"):
        _run("backward_input", x, w, dy, geometry, lambda n: n)
    with pytest.raises(ValueError, match=r"^conv2d_backward_weight: workspace must be a contig"):
        _run("backward_weight", x, w, dy, geometry, lambda n: capsule(torch.empty(n // 4 + 1)))

    def fails(n):
        raise RuntimeError("provider failed")

    with pytest.raises(RuntimeError, match="provider failed"):
        _run("forward", x, w, dy, geometry, fails)


def test_bad_shapes_raise_before_the_provider_is_asked():
    x, w, dy, geometry = _conv_case(c=5, k=6)
    provide = _filled(0.0)
    with pytest.raises(ValueError, match=r"^conv2d: "):
        _run("forward", x, w[:, :4], dy, geometry, provide)
    assert provide.asked == []


def _in_new_thread(fn):
    """fn's result, run in a thread of its own (a fresh workspace cache)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    thread.join()
    return result[0]


def test_workspace_cache_keeps_one_small_buffer_per_thread():
    def sizes():
        small = workspace(100)
        reused = workspace(64) is small and workspace(100) is small
        grown = workspace(200)
        regrown = grown is not small and workspace(150) is grown
        huge = workspace(workspace._KEEP + 1)  # handed out, not kept
        kept = workspace(200) is grown and workspace(workspace._KEEP + 1) is not huge
        return reused, regrown, kept, grown

    *checks, mine = _in_new_thread(sizes)
    assert checks == [True, True, True]
    assert _in_new_thread(lambda: workspace(100)) is not mine


@pytest.mark.parametrize("route", ["eager", "torch.ops"])
def test_kernel_larger_than_padded_input_raises_on_every_route(route):
    """The check lives in the shared output-shape function, which the wrapper no longer runs
    itself: calling the op directly must raise it too."""
    x, w = torch.randn(1, 2, 2, 2), torch.randn(3, 2, 4, 4)
    message = r"^conv2d: the kernel \(4x4 with dilation\) is larger than the padded input \(4x2\)"
    with pytest.raises(ValueError, match=message):
        if route == "eager":
            fo.conv2d(x, w, padding=(1, 0))
        else:
            torch.ops.fastcnn.conv2d(x, w, None, (1, 1), (1, 0), (1, 0), (1, 1), 1, False)


@pytest.mark.parametrize("route", ["eager", "torch.ops"])
def test_empty_pooling_output_raises_on_every_route(route):
    x = torch.randn(1, 2, 3, 3)
    with pytest.raises(ValueError, match=r"^max_pool2d: the output would be empty \(0x0\)"):
        if route == "eager":
            fo.max_pool2d(x, 4)
        else:
            torch.ops.fastcnn.max_pool2d(x, (4, 4), (4, 4), (0, 0), (1, 1), False, False)
