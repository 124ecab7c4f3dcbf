"""Threads: the ops are safe to call from many Python threads at once, release the GIL while
their kernels run, and give bit-identical results run after run, for a given thread count;
all but conv2d's backward-weight (outside depthwise layers) give the same bits for every
thread count; and they are right when OpenMP starts fewer threads than asked."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import fastcnn
from fastcnn import _C
from fastcnn.ops._boundary import capsule


@pytest.fixture
def num_threads():
    """Sets torch's (and so fastcnn's) thread count for the test, then restores it."""
    saved = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(saved)


def _leaf(shape, fmt, gen: torch.Generator):
    return torch.randn(shape, generator=gen).contiguous(memory_format=fmt).requires_grad_()


# Each case: a function of fresh leaves returning (output, gradients of the leaves), and
# whether its results are the same for every thread count.
def _conv(groups, fmt, gen):
    x, w = _leaf((4, 32, 40, 40), fmt, gen), _leaf((32, 32 // groups, 3, 3), fmt, gen)
    b = _leaf((32,), torch.contiguous_format, gen)
    y = fastcnn.ops.conv2d(x, w, b, padding=1, groups=groups, activation="relu")
    return y, (x, w, b)


def _pool(fmt, gen):
    x = _leaf((4, 32, 48, 48), fmt, gen)
    return fastcnn.ops.max_pool2d(x, 3, 2, 1), (x,)


def _gap(fmt, gen):
    x = _leaf((8, 64, 24, 24), fmt, gen)
    return fastcnn.ops.global_avg_pool2d(x), (x,)


def _relu(op, fmt, gen):
    x = _leaf((4, 32, 48, 48), fmt, gen)
    return getattr(fastcnn.ops, op)(x), (x,)


CASES = {
    "conv2d": lambda fmt, gen: _conv(1, fmt, gen),
    "conv2d_depthwise": lambda fmt, gen: _conv(32, fmt, gen),
    "max_pool2d": _pool,
    "global_avg_pool2d": _gap,
    "relu": lambda fmt, gen: _relu("relu", fmt, gen),
    "guided_relu": lambda fmt, gen: _relu("guided_relu", fmt, gen),
}
FORMATS = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}


def _run(case: str, fmt, seed: int) -> list[torch.Tensor]:
    """The op's output and its input gradients, for inputs drawn from `seed`."""
    gen = torch.Generator().manual_seed(seed)  # not the global one: threads share that
    out, leaves = CASES[case](fmt, gen)
    grad = torch.randn(out.shape, generator=gen)
    out.backward(grad.contiguous(memory_format=fmt) if grad.dim() == 4 else grad)
    return [out.detach(), *(t.grad for t in leaves)]


def _identical(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
@pytest.mark.parametrize("case", CASES)
def test_bit_identical_across_runs_and_thread_counts(case, fmt, num_threads):
    results = {}
    for threads in (1, 2):
        num_threads(threads)
        runs = [_run(case, fmt, seed=0) for _ in range(3)]
        assert all(_identical(runs[0], r) for r in runs[1:]), f"{threads} threads: runs differ"
        results[threads] = runs[0]
    if case.startswith("conv2d") and case != "conv2d_depthwise":
        # The backward-weight (GEMM and dot paths) splits its reduction over threads (partial
        # sums added in a fixed order): deterministic for a thread count, not across counts.
        output, grad_x, _, grad_b = results[1]
        assert _identical([output, grad_x, grad_b], [results[2][i] for i in (0, 1, 3)])
    else:
        assert _identical(results[1], results[2]), "1 and 2 threads differ"


@pytest.mark.parametrize("case", CASES)
def test_eight_python_threads_match_serial_calls(case, num_threads):
    num_threads(2)
    seeds = range(8)
    fmts = [FORMATS["nchw"], FORMATS["nhwc"]] * 4
    serial = [_run(case, fmt, s) for s, fmt in zip(seeds, fmts)]
    start = threading.Barrier(8)

    def worker(i):
        start.wait()  # all eight enter the kernels together
        return [_run(case, fmts[i], seeds[i]) for _ in range(3)]

    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(worker, range(8)))
    for i, runs in enumerate(concurrent):
        for r in runs:
            assert _identical(r, serial[i]), f"thread {i} differs from the serial call"


def test_smaller_openmp_team_gives_the_same_bits(tmp_path, num_threads):
    """OMP_THREAD_LIMIT=1 makes OpenMP start one thread where two are asked for (as do
    OMP_DYNAMIC and calls from inside a parallel region): every op must still cover all its
    work, with the same bits as two real threads (results depend on the thread count asked)."""
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_hardening_threads import CASES, FORMATS, _run
        torch.set_num_threads(2)
        torch.save(
            {{(c, f): _run(c, fmt, seed=0) for c in CASES for f, fmt in FORMATS.items()}},
            {str(tmp_path / "limited.pt")!r},
        )
        """
    )
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=300)
    limited = torch.load(tmp_path / "limited.pt")
    num_threads(2)
    for (case, f), got in limited.items():
        assert _identical(got, _run(case, FORMATS[f], seed=0)), f"{case} {f}"


def test_kernels_release_the_gil(num_threads):
    """While one thread is inside a long kernel, another Python thread keeps running."""
    num_threads(1)
    x = torch.randn(4, 64, 96, 96)
    w = torch.randn(64, 64, 5, 5)  # not a Winograd shape: long enough on the direct path
    out = torch.empty(4, 64, 96, 96)
    geometry = ((1, 1), (2, 2), (2, 2), (1, 1), 1)
    ws = torch.empty(
        _C.conv2d_workspace("forward", capsule(x), capsule(w), capsule(out), *geometry, 1),
        dtype=torch.uint8,
    )
    args = (capsule(x), capsule(w), None, capsule(out), *geometry, False, capsule(ws), 1)
    window = {}

    def call():
        window["start"] = time.perf_counter()
        _C.conv2d_forward(*args)
        window["end"] = time.perf_counter()

    ticks = []
    worker = threading.Thread(target=call)
    worker.start()
    while worker.is_alive():
        ticks.append(time.perf_counter())
    worker.join()
    start, end = window["start"], window["end"]
    assert end - start > 0.05, "the kernel ran too briefly to tell"
    # Python's switch interval is 5 ms: a kernel holding the GIL would let no tick through
    # in the middle of its run.
    middle = [t for t in ticks if start + 0.01 < t < end - 0.01]
    assert len(middle) > 100, f"the main thread ran {len(middle)} times during the kernel"


# One layer per forward route (Winograd, the stem's Winograd, the rows path, the GEMM), as
# (x shape, w shape, stride, padding), every pass run through its binding.
_ROUTES = {
    "winograd": ((2, 16, 12, 12), (16, 16, 3, 3), 1, 1),
    "stem": ((1, 3, 30, 30), (16, 3, 7, 7), 2, 3),
    "rows": ((1, 3, 30, 30), (16, 3, 7, 7), 1, 3),
    "gemm": ((2, 5, 9, 9), (6, 5, 3, 3), 1, 1),
}


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "cl"])
@pytest.mark.parametrize("route", _ROUTES)
def test_more_threads_than_work(route, fmt):
    """A thread count far above the work (2**31 - 1, the largest the bindings take) gives the
    same results as 2 threads, and no larger a workspace: each kernel uses at most one thread
    per task (the sanitizer build checks its arithmetic too)."""
    xs, ws_, stride, pad = _ROUTES[route]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(xs, generator=gen).contiguous(memory_format=fmt)
    w = torch.randn(ws_, generator=gen).contiguous(memory_format=fmt)
    geometry = ((stride, stride), (pad, pad), (pad, pad), (1, 1), 1)
    dy = torch.randn(torch.nn.functional.conv2d(x, w, None, stride, pad).shape, generator=gen)
    dy = dy.contiguous(memory_format=fmt)

    def run(threads):
        sizes = []

        def provide(n):
            sizes.append(n)
            return capsule(torch.empty(n, dtype=torch.uint8))

        y, dx, dw = torch.empty_like(dy), torch.empty_like(x), torch.empty_like(w)
        c = capsule
        _C.conv2d_forward(c(x), c(w), None, c(y), *geometry, False, provide, threads)
        _C.conv2d_backward_input(c(dy), c(w), c(dx), *geometry, provide, threads)
        _C.conv2d_backward_weight(c(dy), c(x), c(dw), *geometry, provide, threads)
        return (y, dx, dw), sizes

    few, few_sizes = run(2)
    many, many_sizes = run(2**31 - 1)
    # The weight gradient splits its reduction over the threads, so it rounds differently.
    for a, b in zip(few, many):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # Above 2 threads a kernel may keep more buffers, but only as many as it has tasks.
    assert max(many_sizes) <= 64 * max(few_sizes), (few_sizes, many_sizes)
