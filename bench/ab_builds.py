"""Two builds of fastcnn's conv kernels against each other, in one process, in paired samples.

On a host whose speed drifts by 10-30 % over seconds, timing two builds in turn in separate
processes cannot resolve a change of a few percent: the same build read 9.2 to 12.6 ms on
C10 within minutes. This script loads a second build's extension (``--base``: the path of its
``_C`` shared library) beside the installed one, gives both the same tensors, and times them
in bench_cpu's paired samples (``time_pairs``): the figure is the median over the samples of
base / new, each sample timing a block of calls of each build back to back.

Two copies of the same build (an A/A run, 0.5 s a build and row) read base/new 0.96-1.02
over C1, C10 and D2's 24 rows, 0.98-1.02 on 21 of them.

Usage::

    python bench/ab_builds.py --base /tmp/old/_C.cpython-311-x86_64-linux-gnu.so \\
        --only C10,C12 --format channels_last

The kernels are called through the bindings as ``fastcnn.ops`` calls them, without the
Python layer's own choices (the NCHW weight gradient's channels_last copies). Each build's
result is checked against torch's before it is timed, as bench_cpu.py checks its rows; both
builds must take the same binding arguments.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import statistics
import sys
from collections.abc import Callable
from functools import partial
from types import ModuleType

import bench_cpu
import steady_malloc
import torch

from fastcnn.ops._boundary import _C, capsule, workspace

PASSES = ("conv fwd", "conv+bias+relu", "conv bwd-data", "conv bwd-weight")


def load_build(path: str, name: str = "fastcnn_base._C") -> ModuleType:
    """The extension at ``path`` as a module of its own (its init function is PyInit__C)."""
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def kernel_call(module: ModuleType, op: str, s: bench_cpu.ConvShape, t: dict) -> Callable:
    """A call of ``module``'s kernel for pass ``op`` on tensors ``t``, returning its output
    (a tensor of its own per build, allocated once)."""
    geometry = ((s.stride,) * 2, (s.pad,) * 2, (s.pad,) * 2, (1, 1), s.groups)
    x, w, b, dy = t["x"], t["w"], t["b"], t["dy"]
    if op in ("conv fwd", "conv+bias+relu"):
        out = torch.empty_like(dy)
        kernel = partial(
            module.conv2d_forward,
            *(capsule(x), capsule(w), capsule(b), capsule(out), *geometry, op != "conv fwd"),
        )
    elif op == "conv bwd-data":
        out = torch.empty_like(x)
        kernel = partial(
            module.conv2d_backward_input, capsule(dy), capsule(w), capsule(out), *geometry
        )
    else:
        out = torch.empty_like(w)
        kernel = partial(
            module.conv2d_backward_weight, capsule(dy), capsule(x), capsule(out), *geometry
        )

    def call() -> torch.Tensor:
        kernel(workspace, bench_cpu.THREADS)
        return out

    return call


def reference(op: str, s: bench_cpu.ConvShape, t: dict) -> torch.Tensor:
    """torch's result for pass ``op``, as bench_cpu.py checks its rows against."""
    if op in ("conv fwd", "conv+bias+relu"):
        return bench_cpu.torch_forward(s, t, relu=op == "conv+bias+relu")()
    return bench_cpu.torch_backward(s, t, "input" if op == "conv bwd-data" else "weight")()


def paired_times(
    first: ModuleType, second: ModuleType, s: bench_cpu.ConvShape, fmt: str, op: str, t: float
) -> list[list[float]]:
    """Per-call milliseconds of both builds' kernels for pass ``op``, one figure per paired
    sample (bench_cpu.time_pairs), after each build's result is checked against torch's."""
    tensors = bench_cpu._conv_tensors(s, fmt)
    conv_pass = next(p for p in bench_cpu.CONV_PASSES if p.op == op)
    bound = bench_cpu.WINOGRAD_BOUND if conv_pass.winograd(s) else 0.0
    want = reference(op, s, tensors)
    calls = (kernel_call(first, op, s, tensors), kernel_call(second, op, s, tensors))
    for call in calls:
        bench_cpu.check(call(), want, conv_pass.reduction(s), bound)
    return bench_cpu.time_pairs((calls,), t)


def compare(base: ModuleType, s: bench_cpu.ConvShape, fmt: str, op: str, min_run_time: float):
    base_ms, new_ms = paired_times(base, _C, s, fmt, op, min_run_time)
    ratio = bench_cpu.median_ratio(base_ms, new_ms)
    print(
        f"{s.id:<4} {fmt:<13} {op:<16} base {statistics.median(base_ms):8.3f} ms  "
        f"new {statistics.median(new_ms):8.3f} ms  base/new {ratio:5.3f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="path of the other build's _C library")
    parser.add_argument("--only", help="case ids, e.g. C10,C12 (default: every conv)")
    parser.add_argument("--format", choices=("nchw", "channels_last", "both"), default="both")
    parser.add_argument("--passes", default=",".join(PASSES), help="of: " + ", ".join(PASSES))
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds per build")
    steady_malloc.add_flag(parser)
    args = parser.parse_args()
    steady_malloc.pin(args.default_malloc)
    torch.set_num_threads(bench_cpu.THREADS)
    ops = args.passes.split(",")
    if unknown := set(ops) - set(PASSES):
        parser.error(f"--passes: unknown {sorted(unknown)}; choose from {PASSES}")
    only = set(args.only.split(",")) if args.only else None
    formats = ("nchw", "channels_last") if args.format == "both" else (args.format,)
    base = load_build(args.base)
    print(f"base {args.base} against the installed {_C.__file__}; base/new > 1: new is faster")
    for fmt in formats:
        for s in bench_cpu.CONV_SHAPES:
            if only is None or s.id in only:
                for op in ops:
                    compare(base, s, fmt, op, args.min_run_time)


if __name__ == "__main__":
    sys.exit(main())
