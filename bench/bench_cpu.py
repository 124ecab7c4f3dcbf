"""CPU benchmark: fastcnn's kernels against the PyTorch ops a user would otherwise call.

Usage::

    python bench/bench_cpu.py                      # every CPU case of BENCH.md, both formats
    python bench/bench_cpu.py --quick              # representative subset, NCHW only, < 1 min
    python bench/bench_cpu.py --only C5,P1 --format channels_last --json results.json
    python bench/bench_cpu.py --conv 8,1024,256,14,1,1,0 --format nchw   # any conv shape, as X1

Cases (ids as in BENCH.md): the convolutions C1..C12, D1, D2 and DW, each timed forward with
bias, fused with bias+ReLU (against torch's conv followed by an in-place ReLU, as
``nn.ReLU(inplace=True)``), backward-data and backward-weight (against the
``aten.convolution_backward`` call that autograd makes, with the output mask of that one
gradient); max pooling P1 and P3 forward and as a forward+backward training step through
autograd on both sides; global average pooling G3 forward and backward (against
``nn.AdaptiveAvgPool2d(1)``, which torch computes as a mean, and that mean's backward);
R1: ReLU forward, ReLU backward, and guided-ReLU backward (against ReLU's backward followed
by ``clamp(min=0)``). GPU-only rows and end-to-end models are not part of this script.
A row's fastcnn and torch timings are taken in rounds that alternate which side runs first
(``ROUNDS``). After the rows, each convolution's fused ReLU is timed against fastcnn's own
conv + bias, and torch's conv + relu against its conv, in paired samples (``SAMPLES``; "fused
ReLU cost": how much longer the fused call takes, and both ratios, each the median of ratios
within one sample).

Protocol (BENCH.md): ``torch.set_num_threads(2)``; ``torch.utils.benchmark.Timer`` with
``num_threads=2``; ``blocked_autorange``; medians; glibc's malloc thresholds pinned
(steady_malloc.py: no page faults from blocks under 32 MiB on either side; ``--default-malloc``
keeps glibc's dynamic ones). Each case first checks fastcnn's result
against torch's with ``torch.testing.assert_close`` and reports no speed for a wrong (or
raising) kernel: the row is marked FAILED, the run goes on, and the exit status is 1.
The CPU time other processes take while a row is timed is measured from /proc/stat
("others", in cores); on a shared machine a contended timing is retaken after a quiet second
(``--retries``, ``--wait-budget``), and what stays contended is shown as such.

Ceilings are measured at the start of the run: compute as the FP32 FMA peak of 2 threads
(16 independent FMA chains per thread, a probe built with the system C compiler; without one,
a 2048^3 float32 ``torch.mm``, which is also reported), bandwidth as ``y.copy_(x)`` on 800 MB
counted as read + write. "fraction" is the roofline floor time
``max(flops / peak, bytes / bandwidth)`` over the measured time, with bytes the compulsory
traffic (each operand read or written once).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, TypeVar

import steady_malloc
import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

import fastcnn

THREADS = 2
F32 = 4  # bytes per float32 element
EXACT = 0  # reduction size marking a case whose result must match bit for bit
RTOL = 1e-4
# Absolute tolerance per unit of output RMS and square root of the reduction length: float32
# sums of n terms in different orders differ by ~eps * sqrt(n) * rms; this allows ~16 eps.
ATOL_PER_SQRT_N = 2e-6
# Passes that may take a Winograd path (3x3 stride-1 layers, the stem's 1-D form forward)
# promise less: max |error| under 1e-4 of max |output| (README, Conventions). Their error runs
# up to ~15x the bound above, and after a ReLU the RMS that scales it halves, so a correct
# Winograd result crossed it in about one call in 50. Only those rows get this bound.
WINOGRAD_BOUND = 1e-4
MATMUL_N = 2048
COPY_BYTES = 800_000_000
CONTENDED = 0.1  # cores used by other processes above which a timing is not trusted
QUICK_IDS = ("C1", "C5", "C11", "DW", "P1", "G3", "R1")
FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}

T = TypeVar("T")
Output = Any  # a tensor or a tuple of tensors
Fn = Callable[[], Output]


@dataclass(frozen=True)
class Case:
    """One timed comparison. ``make`` allocates the inputs and returns (fastcnn, torch) thunks;
    it runs only when the case does, so at most one case's tensors are alive at a time."""

    id: str
    op: str
    fmt: str
    shape: str
    make: Callable[[], tuple[Fn, Fn]] = field(repr=False, compare=False)
    bytes: float  # compulsory traffic: every operand read or written once
    flops: float = 0.0  # 0: a memory-bound op, rated in GB/s
    reduction: int = EXACT  # terms summed per output element, for the tolerance
    bound: float = 0.0  # error allowed relative to max |output| (a Winograd path's)


@dataclass(frozen=True)
class Ceilings:
    fma_gflops: float | None  # FMA peak; None where no C compiler could build the probe
    matmul_gflops: float  # torch.mm: the practical ceiling, used when the FMA peak is missing
    gbps: float
    others_cores: float  # as Row.others_cores, while the ceilings were measured

    @property
    def gflops(self) -> float:
        return self.fma_gflops or self.matmul_gflops

    @property
    def gflops_source(self) -> str:
        if self.fma_gflops:
            return f"FMA peak: 16 chains of 16-lane FMAs per thread, {THREADS} threads"
        return f"torch.mm {MATMUL_N}^3 float32, {THREADS} threads (no C compiler for the FMA probe)"

    gbps_source = f"y.copy_(x) on {COPY_BYTES // 10**6} MB float32, read + write"

    def floor_ms(self, flops: float, nbytes: float) -> float:
        return 1e3 * max(flops / (self.gflops * 1e9), nbytes / (self.gbps * 1e9))

    def as_dict(self) -> dict[str, Any]:
        sources = {"gflops_source": self.gflops_source, "gbps_source": self.gbps_source}
        return {**asdict(self), "gflops": self.gflops, **sources}


@dataclass
class Row:
    id: str
    op: str
    format: str
    shape: str
    flops: float
    bytes: float
    status: str = "ok"
    error: str = ""
    fastcnn_ms: float = math.nan
    torch_ms: float = math.nan
    floor_ms: float = math.nan
    ratio: float = math.nan  # torch / fastcnn: > 1 means fastcnn is faster
    unit: str = ""
    fastcnn_rate: float = math.nan
    torch_rate: float = math.nan
    fastcnn_fraction: float = math.nan  # of the roofline ceiling
    torch_fraction: float = math.nan
    others_cores: float = math.nan  # CPU cores other processes kept busy while this row ran
    tries: int = 0  # timings taken: more than 1 when other processes interfered


# --------------------------------------------------------------------------------------------
# Timing, checking, ceilings


def time_ms(fn: Fn, min_run_time: float) -> float:
    """Median milliseconds per call of ``fn`` under the BENCH.md protocol."""
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=THREADS)
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


# A row's two timings are taken in this many rounds, back to back and in turn first and
# second, each round a quarter of the time budget: a slow spell of the VM (these hosts' speed
# drifts by 10-30 % over seconds) then moves both sides alike instead of whichever was timed
# second. Each side's time is the median of its rounds' medians.
ROUNDS = 4


def time_rounds(fns: tuple[Fn, ...], min_run_time: float) -> list[float]:
    """Median milliseconds per call of each of ``fns``, timed in ``ROUNDS`` rounds whose
    order rotates, so each function runs first, second, ... alike."""
    times: list[list[float]] = [[] for _ in fns]
    for r in range(ROUNDS):
        for i in range(len(fns)):
            j = (i + r) % len(fns)
            times[j].append(time_ms(fns[j], min_run_time / ROUNDS))
    return [statistics.median(t) for t in times]


def check(actual: Output, expected: Output, reduction: int, bound: float = 0.0) -> None:
    """``assert_close`` on each output; the tolerance grows with the reduction length, and is
    at least ``bound`` times the largest expected magnitude."""
    pairs = zip(actual, expected) if isinstance(expected, tuple) else [(actual, expected)]
    for a, e in pairs:
        if reduction == EXACT:
            torch.testing.assert_close(a, e, rtol=0, atol=0)
            continue
        rms = e.double().pow(2).mean().sqrt().item()
        atol = max(ATOL_PER_SQRT_N * math.sqrt(reduction) * rms, bound * e.abs().max().item())
        torch.testing.assert_close(a, e, rtol=RTOL, atol=atol)


def cpu_seconds() -> tuple[float, float]:
    """Busy CPU seconds so far of the whole machine (from /proc/stat, steal included; NaN
    without it) and of this process, all threads."""
    try:
        with open("/proc/stat") as f:
            user, nice, system, idle, iowait, irq, softirq, steal = map(
                int, f.readline().split()[1:9]
            )
    except (OSError, ValueError):
        return math.nan, time.process_time()
    busy = user + nice + system + irq + softirq + steal
    return busy / os.sysconf("SC_CLK_TCK"), time.process_time()


def others_cores(since: tuple[float, float], wall_s: float) -> float:
    """Mean number of cores that other processes used since ``since``: a timing taken while
    this is well above 0 shares the machine, and is not to be trusted."""
    machine, own = (now - then for now, then in zip(cpu_seconds(), since))
    return max(0.0, machine - own) / wall_s


def contended(others: float) -> bool:
    """NaN (no /proc/stat to tell) counts as quiet."""
    return others >= CONTENDED


@dataclass
class QuietPolicy:
    """What to do when other processes share the machine during a timing: retake it up to
    ``retries`` times, each after waiting for a quiet second, within a total waiting budget."""

    retries: int
    budget_s: float

    def measure(self, fn: Callable[[], T]) -> tuple[T, float, int]:
        """``fn()``, the cores other processes used during its last try, and the tries."""
        tries = 1
        while True:
            start, t0 = cpu_seconds(), time.perf_counter()
            result = fn()
            others = others_cores(start, time.perf_counter() - t0)
            if not contended(others) or tries > self.retries or self.budget_s <= 0:
                return result, others, tries
            self._wait_for_quiet()
            tries += 1

    def _wait_for_quiet(self) -> None:
        while self.budget_s > 0:
            start = cpu_seconds()
            time.sleep(1.0)
            self.budget_s -= 1.0
            if not contended(others_cores(start, 1.0)):
                return


# 16 independent chains of 16-lane float32 FMAs: enough in flight to fill the FMA pipes
# (latency x throughput), held in 16 of the 32 zmm registers of an AVX-512 core. The two
# operands are built as vectors, so they stay in registers too: filled lane by lane, GCC kept
# one in memory and every FMA loaded it, which capped a core with two 512-bit FMA units at
# 70 % of its peak (bench/NOTES.md, "Eighth session"). On an AVX2-only core the compiler
# splits the chains into 32 ymm halves and spills some, so the figure there is a lower bound.
_FMA_PROBE_C = r"""
typedef float v16 __attribute__((vector_size(64)));
float fma_chains(long iters) {
    v16 acc[16];
    const v16 a = (v16){} + 0.999999f, b = (v16){} + 1e-7f;
    for (int i = 0; i < 16; ++i) for (int j = 0; j < 16; ++j) acc[i][j] = (float)(i + j);
    for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) acc[i] = acc[i] * a + b;
    }
    float s = 0.0f;
    for (int i = 0; i < 16; ++i) for (int j = 0; j < 16; ++j) s += acc[i][j];
    return s;
}
"""
_FMA_PROBE_FLOPS_PER_ITER = 16 * 16 * 2
_FMA_PROBE_ITERS = 20_000_000  # ~0.1 s a thread


def fma_peak_gflops(repeats: int = 5) -> float | None:
    """The FP32 FMA peak of ``THREADS`` threads, as BENCH.md measures it: the probe above,
    built with the system C compiler (-O2 -march=native) and run on ``THREADS`` Python threads
    (ctypes releases the GIL); the best of ``repeats``. None without a working compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, lib = os.path.join(tmp, "fma.c"), os.path.join(tmp, "fma.so")
        with open(src, "w") as f:
            f.write(_FMA_PROBE_C)
        build = [cc, "-O2", "-march=native", "-shared", "-fPIC", src, "-o", lib]
        if subprocess.run(build, capture_output=True).returncode != 0:
            return None
        probe = ctypes.CDLL(lib).fma_chains
    probe.argtypes, probe.restype = [ctypes.c_long], ctypes.c_float
    best = 0.0
    with ThreadPoolExecutor(THREADS) as pool:
        for _ in range(repeats):
            t0 = time.perf_counter()
            list(pool.map(probe, [_FMA_PROBE_ITERS] * THREADS))
            seconds = time.perf_counter() - t0
            best = max(best, THREADS * _FMA_PROBE_ITERS * _FMA_PROBE_FLOPS_PER_ITER / seconds)
    return best / 1e9


def _ceiling_rates(min_run_time: float) -> tuple[float | None, float, float]:
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    c = torch.empty(MATMUL_N, MATMUL_N)
    mm_ms = time_ms(partial(torch.mm, a, b, out=c), min_run_time)
    del a, b, c
    x = torch.ones(COPY_BYTES // F32)
    y = torch.empty_like(x)
    copy_ms = time_ms(partial(y.copy_, x), min_run_time)
    mm_gflops, gbps = 2 * MATMUL_N**3 / (mm_ms * 1e6), 2 * COPY_BYTES / (copy_ms * 1e6)
    return fma_peak_gflops(), mm_gflops, gbps


def measure_ceilings(min_run_time: float, quiet: QuietPolicy) -> Ceilings:
    (fma, mm, gbps), others, _ = quiet.measure(partial(_ceiling_rates, min_run_time))
    return Ceilings(fma, mm, gbps, others)


def run_case(case: Case, ceilings: Ceilings, min_run_time: float, quiet: QuietPolicy) -> Row:
    row = Row(case.id, case.op, case.fmt, case.shape, case.flops, case.bytes)
    try:
        fast, ref = case.make()
        check(fast(), ref(), case.reduction, case.bound)
    except Exception as e:  # a wrong result or a raising kernel: no speed for this row
        row.status, row.error = "FAILED", f"{type(e).__name__}: {e}".strip()
        return row
    both = partial(time_rounds, (fast, ref), min_run_time)
    (row.fastcnn_ms, row.torch_ms), row.others_cores, row.tries = quiet.measure(both)
    row.floor_ms = ceilings.floor_ms(case.flops, case.bytes)
    row.ratio = row.torch_ms / row.fastcnn_ms
    work, row.unit = (case.flops, "GFLOP/s") if case.flops else (case.bytes, "GB/s")
    row.fastcnn_rate, row.torch_rate = (work / (ms * 1e6) for ms in (row.fastcnn_ms, row.torch_ms))
    row.fastcnn_fraction = row.floor_ms / row.fastcnn_ms
    row.torch_fraction = row.floor_ms / row.torch_ms
    return row


def randn(shape: tuple[int, ...], fmt: str) -> torch.Tensor:
    t = torch.randn(shape)
    return t.contiguous(memory_format=FORMATS[fmt]) if t.dim() == 4 else t


# --------------------------------------------------------------------------------------------
# Convolutions


@dataclass(frozen=True)
class ConvShape:
    id: str
    n: int
    c: int
    k: int
    hw: int
    kernel: int
    stride: int
    pad: int
    groups: int = 1

    @property
    def out_hw(self) -> int:
        return (self.hw + 2 * self.pad - self.kernel) // self.stride + 1

    @property
    def flops(self) -> float:
        taps = (self.c // self.groups) * self.kernel**2
        return 2.0 * self.n * self.k * self.out_hw**2 * taps

    @property
    def label(self) -> str:
        g = f" g{self.groups}" if self.groups > 1 else ""
        return (
            f"{self.n}x{self.c}x{self.hw}x{self.hw}->{self.k} "
            f"{self.kernel}x{self.kernel}/{self.stride} p{self.pad}{g}"
        )

    @property
    def winograd_3x3(self) -> bool:
        """fastcnn may run every pass of this layer as Winograd F(4x4, 3x3)."""
        square = self.kernel == 3 and self.stride == 1 and self.groups == 1
        return square and self.c >= 8 and self.k >= 8

    @property
    def winograd_stem(self) -> bool:
        """fastcnn may run this layer's forward as the stem's 1-D Winograd F(5, 4)."""
        return self.stride == 2 and self.c <= 4 and 5 <= self.kernel <= 8

    def elements(self) -> dict[str, int]:
        return {
            "x": self.n * self.c * self.hw**2,
            "w": self.k * (self.c // self.groups) * self.kernel**2,
            "b": self.k,
            "y": self.n * self.k * self.out_hw**2,
        }


CONV_SHAPES = (
    ConvShape("C1", 1, 3, 64, 224, 7, 2, 3),
    ConvShape("C2", 8, 3, 64, 224, 7, 2, 3),
    ConvShape("C4", 1, 64, 64, 56, 3, 1, 1),
    ConvShape("C5", 8, 64, 64, 56, 3, 1, 1),
    ConvShape("C6", 8, 128, 128, 28, 3, 1, 1),
    ConvShape("C7", 8, 256, 256, 14, 3, 1, 1),
    ConvShape("C9", 8, 512, 512, 7, 3, 1, 1),
    ConvShape("C10", 8, 128, 128, 56, 3, 2, 1),
    ConvShape("C11", 8, 64, 256, 56, 1, 1, 0),
    ConvShape("C12", 8, 1024, 256, 14, 1, 1, 0),
    ConvShape("D1", 64, 1, 32, 32, 3, 1, 1),
    ConvShape("D2", 64, 32, 64, 16, 3, 1, 1),
    ConvShape("DW", 8, 256, 256, 56, 3, 1, 1, groups=256),
)


@dataclass(frozen=True)
class ConvPass:
    """One of the four timed conv passes: its name, the operands it reads and writes, the
    length of the sum behind each output element, and how both sides are called."""

    op: str
    operands: tuple[str, ...]
    reduction: Callable[[ConvShape], int]
    build: Callable[[ConvShape, str], tuple[Fn, Fn]]
    forward: bool = False  # a forward pass: the stem's Winograd form applies too

    def winograd(self, s: ConvShape) -> bool:
        return s.winograd_3x3 or (self.forward and s.winograd_stem)


def _conv_tensors(s: ConvShape, fmt: str) -> dict[str, torch.Tensor]:
    e = s.elements()
    return {
        "x": randn((s.n, s.c, s.hw, s.hw), fmt),
        "w": randn((s.k, s.c // s.groups, s.kernel, s.kernel), fmt),
        "b": randn((e["b"],), fmt),
        "dy": randn((s.n, s.k, s.out_hw, s.out_hw), fmt),
    }


def _torch_conv_relu(x, w, b, stride: int, pad: int, groups: int) -> torch.Tensor:
    return torch.relu_(F.conv2d(x, w, b, stride, pad, 1, groups))


def torch_forward(s: ConvShape, t: dict[str, torch.Tensor], relu: bool) -> Fn:
    """torch's forward on tensors ``t`` (``_conv_tensors``): conv, then an in-place ReLU."""
    return partial(
        _torch_conv_relu if relu else F.conv2d,
        t["x"],
        t["w"],
        t["b"],
        s.stride,
        s.pad,
        groups=s.groups,
    )


def torch_backward(s: ConvShape, t: dict[str, torch.Tensor], grad: str) -> Fn:
    """The ``aten.convolution_backward`` call autograd makes when only the ``grad``
    ("input" or "weight") gradient is needed, on tensors ``t``."""
    mask = [grad == "input", grad == "weight", False]
    aten = partial(
        torch.ops.aten.convolution_backward,
        t["dy"],
        t["x"],
        t["w"],
        None,
        [s.stride] * 2,
        [s.pad] * 2,
        [1, 1],
        False,
        [0, 0],
        s.groups,
        mask,
    )
    index = 0 if grad == "input" else 1
    return lambda: aten()[index]


def _build_forward(s: ConvShape, fmt: str, relu: bool) -> tuple[Fn, Fn]:
    t = _conv_tensors(s, fmt)
    args = (t["x"], t["w"], t["b"], s.stride, s.pad, 1, s.groups)
    fast = partial(fastcnn.ops.conv2d, *args, activation="relu" if relu else None)
    return fast, torch_forward(s, t, relu)


def _build_backward(s: ConvShape, fmt: str, grad: str) -> tuple[Fn, Fn]:
    """``grad`` is "input" or "weight": fastcnn's backward op against torch_backward."""
    t = _conv_tensors(s, fmt)
    x, w, dy = t["x"], t["w"], t["dy"]
    geometry = ([s.stride] * 2, [s.pad] * 2, [s.pad] * 2, [1, 1], s.groups)
    channels_last = fmt == "channels_last"
    if grad == "input":
        fast = partial(
            torch.ops.fastcnn.conv2d_backward_input, dy, w, x.shape, channels_last, *geometry
        )
    else:
        fast = partial(
            torch.ops.fastcnn.conv2d_backward_weight, dy, x, w.shape, channels_last, *geometry
        )
    return fast, torch_backward(s, t, grad)


CONV_PASSES = (
    ConvPass(
        "conv fwd",
        ("x", "w", "b", "y"),
        lambda s: (s.c // s.groups) * s.kernel**2,
        partial(_build_forward, relu=False),
        forward=True,
    ),
    ConvPass(
        "conv+bias+relu",
        ("x", "w", "b", "y"),
        lambda s: (s.c // s.groups) * s.kernel**2,
        partial(_build_forward, relu=True),
        forward=True,
    ),
    ConvPass(
        "conv bwd-data",
        ("y", "w", "x"),
        lambda s: (s.k // s.groups) * s.kernel**2,
        partial(_build_backward, grad="input"),
    ),
    ConvPass(
        "conv bwd-weight",
        ("y", "x", "w"),
        lambda s: s.n * s.out_hw**2,
        partial(_build_backward, grad="weight"),
    ),
)


def conv_cases(fmt: str, shapes: Iterable[ConvShape] = CONV_SHAPES) -> Iterator[Case]:
    for s in shapes:
        for p in CONV_PASSES:
            nbytes = F32 * sum(s.elements()[o] for o in p.operands)
            make = partial(p.build, s, fmt)
            bound = WINOGRAD_BOUND if p.winograd(s) else 0.0
            yield Case(s.id, p.op, fmt, s.label, make, nbytes, s.flops, p.reduction(s), bound)


# --------------------------------------------------------------------------------------------
# Memory-bound ops: pooling and activations


def _pool_step(
    pool: Callable[..., torch.Tensor], x: torch.Tensor, dy: torch.Tensor, *geometry: int
) -> torch.Tensor:
    """One training step through autograd: pooling forward, then the gradient of its input."""
    (dx,) = torch.autograd.grad(pool(x, *geometry), x, dy)
    return dx


def _build_max_pool(shape: tuple[int, ...], fmt: str, geometry: tuple, step: bool) -> tuple[Fn, Fn]:
    x = randn(shape, fmt)
    if not step:
        return partial(fastcnn.ops.max_pool2d, x, *geometry), partial(F.max_pool2d, x, *geometry)
    x.requires_grad_()
    dy = torch.randn_like(F.max_pool2d(x.detach(), *geometry))
    return (
        partial(_pool_step, fastcnn.ops.max_pool2d, x, dy, *geometry),
        partial(_pool_step, F.max_pool2d, x, dy, *geometry),
    )


def max_pool_cases(fmt: str) -> Iterator[Case]:
    for id_, shape, k, s, p in (
        ("P1", (8, 64, 112, 112), 3, 2, 1),
        ("P3", (8, 64, 224, 224), 2, 2, 0),
    ):
        n, c, h, _ = shape
        x_n, y_n = math.prod(shape), n * c * ((h + 2 * p - k) // s + 1) ** 2
        label = f"{'x'.join(map(str, shape))} {k}x{k}/{s} p{p}"
        overlap = math.ceil(k / s) ** 2  # gradients summed into one input element
        geometry = (k, s, p)
        make = partial(_build_max_pool, shape, fmt, geometry)
        yield Case(id_, "maxpool fwd", fmt, label, partial(make, step=False), F32 * (x_n + y_n))
        # fwd reads x, writes y; bwd reads dy, writes dx, and finds the argmax from the byte
        # per output the NCHW forward keeps (window offsets) or by re-reading x (channels_last)
        saved = 2 * y_n if fmt == "nchw" else F32 * x_n
        nbytes = F32 * (2 * x_n + 2 * y_n) + saved
        yield Case(id_, "maxpool fwd+bwd", fmt, label, partial(make, step=True), nbytes, 0, overlap)


def _mean_backward(dy: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """What autograd runs for ``nn.AdaptiveAvgPool2d(1)``: torch computes it as a mean."""
    return dy.expand(shape) / (shape[2] * shape[3])


def _build_gap(shape: tuple[int, ...], fmt: str, backward: bool) -> tuple[Fn, Fn]:
    x = randn(shape, fmt)
    if not backward:
        return (
            partial(fastcnn.ops.global_avg_pool2d, x, keepdim=True),
            partial(F.adaptive_avg_pool2d, x, 1),
        )
    dy = F.adaptive_avg_pool2d(torch.randn_like(x), 1)
    bwd = torch.ops.fastcnn.global_avg_pool2d_backward
    return (
        partial(bwd, dy.flatten(1), x.shape, fmt == "channels_last"),
        partial(_mean_backward, dy, x.shape),
    )


def gap_cases(fmt: str) -> Iterator[Case]:
    shape = (64, 512, 7, 7)
    x_n, y_n = math.prod(shape), shape[0] * shape[1]
    label, nbytes = "x".join(map(str, shape)), F32 * (x_n + y_n)
    make = partial(_build_gap, shape, fmt)
    plane = shape[2] * shape[3]
    yield Case("G3", "gap fwd", fmt, label, partial(make, backward=False), nbytes, 0, plane)
    yield Case("G3", "gap bwd", fmt, label, partial(make, backward=True), nbytes, 0, 1)


def _guided_backward_torch(dy: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """What users write today: ReLU's backward, then a hook clamping the gradient at 0."""
    return torch.ops.aten.threshold_backward(dy, y, 0).clamp(min=0)


def _build_relu(shape: tuple[int, ...], fmt: str, op: str) -> tuple[Fn, Fn]:
    x = randn(shape, fmt)
    if op == "relu fwd":
        return partial(fastcnn.ops.relu, x), partial(torch.relu, x)
    y, dy = torch.relu(x), randn(shape, fmt)
    if op == "relu bwd":
        return (
            partial(torch.ops.fastcnn.relu_backward, dy, y),
            partial(torch.ops.aten.threshold_backward, dy, y, 0),
        )
    return (
        partial(torch.ops.fastcnn.guided_relu_backward, dy, y),
        partial(_guided_backward_torch, dy, y),
    )


def relu_cases(fmt: str) -> Iterator[Case]:
    shape = (8, 64, 112, 112)
    n, label = math.prod(shape), "x".join(map(str, shape))
    for op, tensors in (("relu fwd", 2), ("relu bwd", 3), ("guided-relu bwd", 3)):
        make = partial(_build_relu, shape, fmt, op)
        yield Case("R1", op, fmt, label, make, F32 * tensors * n)


def all_cases(formats: Iterable[str], extra: tuple[ConvShape, ...] = ()) -> Iterator[Case]:
    """The suite's cases, then convolutions of the extra shapes (``--conv``), per format."""
    for fmt in formats:
        for family in (conv_cases, max_pool_cases, gap_cases, relu_cases):
            yield from family(fmt)
        yield from conv_cases(fmt, extra)


def conv_spec(spec: str) -> tuple[int, ...]:
    """``--conv N,C,K,HW,KERNEL,STRIDE,PAD[,GROUPS]``: sizes and stride >= 1, padding >= 0."""
    try:
        values = tuple(int(v) for v in spec.split(","))
    except ValueError:
        values = ()
    if len(values) not in (7, 8) or values[6] < 0 or min(values[:6] + values[7:]) < 1:
        raise argparse.ArgumentTypeError(
            f"expected N,C,K,HW,KERNEL,STRIDE,PAD[,GROUPS] with sizes >= 1, got {spec!r}"
        )
    return values


# --------------------------------------------------------------------------------------------
# The fused ReLU's cost: fastcnn's conv + bias + ReLU against its own conv + bias


# A few percent measured on a host whose speed drifts by 10-30 % over seconds, and in runs of
# four rotating rounds (time_rounds) by as much again through the order: a call timed after
# torch's ops found the caches as torch left them, one timed after fastcnn's own conv found
# its operands warm. So the cost is paired: each of SAMPLES samples times a block of plain
# and fused calls back to back, the two in turn first, then torch's conv and conv + relu_
# the same way, and every figure is the median over the samples of a ratio within one
# sample (a drift moves both sides of a sample alike). With four rotating rounds the same
# rows read -16 % to +36 % on this host; paired, -6 % to +3 % (C1, C5, D2, three times each).
SAMPLES = 40


def time_pairs(pairs: tuple[tuple[Fn, Fn], ...], min_run_time: float) -> list[list[float]]:
    """Per-call milliseconds of each function of ``pairs``, one figure per sample: each
    sample times a block of calls of each pair's two functions back to back, alternating
    which goes first. Blocks last about min_run_time / SAMPLES each."""
    timers = [Timer("fn()", globals={"fn": f}, num_threads=THREADS) for p in pairs for f in p]
    calls = [max(1, round(min_run_time / SAMPLES / t.timeit(2).median)) for t in timers]
    times: list[list[float]] = [[] for _ in timers]
    for i in range(SAMPLES):
        for first in range(0, len(timers), 2):
            for k in (first, first + 1) if i % 2 == 0 else (first + 1, first):
                times[k].append(timers[k].timeit(calls[k]).median * 1e3)
    return times


def median_ratio(num: list[float], den: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(num, den))


@dataclass
class ReluCost:
    id: str
    format: str
    plain_ms: float  # medians over the samples
    fused_ms: float
    torch_plain_ms: float
    torch_fused_ms: float
    cost: float  # how much longer the fused call takes: 0.03 is 3 % longer
    torch_cost: float  # the same for torch's conv + relu_ against its conv
    plain_ratio: float  # torch / fastcnn, plain convs
    fused_ratio: float  # torch / fastcnn, conv + ReLU
    others_cores: float


def relu_cost(s: ConvShape, fmt: str, min_run_time: float, quiet: QuietPolicy) -> ReluCost:
    t = _conv_tensors(s, fmt)
    args = (t["x"], t["w"], t["b"], s.stride, s.pad)
    plain = partial(fastcnn.ops.conv2d, *args, 1, s.groups)
    fused = partial(plain, activation="relu")  # the same tensors, ReLU fused
    theirs = (partial(F.conv2d, *args, groups=s.groups), partial(_torch_conv_relu, *args, s.groups))
    # Four functions: the same time budget as a row's two sides.
    samples, others, _ = quiet.measure(partial(time_pairs, ((plain, fused), theirs), min_run_time))
    p, f, tp, tf = samples
    return ReluCost(
        s.id,
        fmt,
        *(statistics.median(x) for x in samples),
        cost=median_ratio(f, p) - 1.0,
        torch_cost=median_ratio(tf, tp) - 1.0,
        plain_ratio=median_ratio(tp, p),
        fused_ratio=median_ratio(tf, f),
        others_cores=others,
    )


def relu_cost_lines(costs: list[ReluCost]) -> list[str]:
    lines = [
        f"# fused ReLU cost {c.id:<4} {c.format:<13} {c.plain_ms:8.3f} -> {c.fused_ms:8.3f} ms "
        f"{100 * c.cost:+6.1f} % (torch {100 * c.torch_cost:+5.1f} %)  torch/fc plain "
        f"{c.plain_ratio:5.2f} fused {c.fused_ratio:5.2f}  others {c.others_cores:.2f}"
        for c in costs
    ]
    within = sum(c.cost <= 0.03 for c in costs)
    above = sum(c.fused_ratio > c.plain_ratio for c in costs)
    lines.append(f"# fused ReLU within 3 % of the plain conv: {within} of {len(costs)}")
    lines.append(f"# fused ratio above the plain conv's: {above} of {len(costs)}")
    return lines


# --------------------------------------------------------------------------------------------
# Reporting

COLUMNS = (
    ("id", 4, "{}"),
    ("op", 16, "{}"),
    ("format", 13, "{}"),
    ("shape", 30, "{}"),
    ("fastcnn ms", 10, "{:.3f}"),
    ("torch ms", 10, "{:.3f}"),
    ("torch/fc", 8, "{:.2f}"),
    ("fc rate", 9, "{:.1f}"),
    ("torch rate", 10, "{:.1f}"),
    ("unit", 7, "{}"),
    ("fc frac", 7, "{:.2f}"),
    ("others", 6, "{:.2f}"),
    ("try", 3, "{}"),
)


def format_row(row: Row) -> str:
    values = (
        row.id,
        row.op,
        row.format,
        row.shape,
        row.fastcnn_ms,
        row.torch_ms,
        row.ratio,
        row.fastcnn_rate,
        row.torch_rate,
        row.unit,
        row.fastcnn_fraction,
        row.others_cores,
        row.tries,
    )
    if row.status != "ok":
        cells = [f"{v:<{w}}" for (_, w, _), v in zip(COLUMNS[:4], values)]
        return "  ".join([*cells, f"FAILED  {' '.join(row.error.split())[:300]}"])
    return "  ".join(f"{fmt.format(v):<{w}}" for (_, w, fmt), v in zip(COLUMNS, values))


def header() -> str:
    line = "  ".join(f"{name:<{w}}" for name, w, _ in COLUMNS)
    return f"{line}\n{'-' * len(line)}"


def geomean_lines(rows: list[Row]) -> list[str]:
    """Geometric-mean ratio of each op over the conv suite (C* and D* cases), per format."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        if r.status == "ok" and r.id[0] in "CD":
            groups.setdefault((r.op, r.format), []).append(r.ratio)
    return [
        f"# geomean torch/fc, {op}, {fmt}: "
        f"{math.exp(sum(map(math.log, ratios)) / len(ratios)):.2f} over {len(ratios)} shapes"
        for (op, fmt), ratios in groups.items()
    ]


def markdown_table(rows: list[Row]) -> str:
    """One line per case and op, the memory formats side by side: for README."""
    formats = [f for f in FORMATS if any(r.format == f for r in rows)]
    cells = {(r.id, r.op, r.format): r for r in rows}
    head = ["id", "op", "shape"] + [f"{f}: fastcnn ms / torch ms / ratio" for f in formats]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "--:|" * len(formats)]
    for key in dict.fromkeys((r.id, r.op) for r in rows):
        shape = next(cells[(*key, f)].shape for f in formats if (*key, f) in cells)
        out = [key[0], key[1], shape]
        for f in formats:
            r = cells.get((*key, f))
            ok = r is not None and r.status == "ok"
            out.append(
                f"{r.fastcnn_ms:.3f} / {r.torch_ms:.3f} / **{r.ratio:.2f}**"
                if ok
                else ("FAILED" if r is not None else "")
            )
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines) + "\n"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "fastcnn": fastcnn.info(),
        "torch": torch.__version__,
        # ATen's vector kernels and oneDNN's each pick an ISA; both can be capped from the
        # environment (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA) to compare ISA against ISA.
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_start": os.getloadavg(),
    }


def _nan_to_none(v: Any) -> Any:
    """JSON has no NaN: a FAILED row's missing timings are written as null."""
    return None if isinstance(v, float) and math.isnan(v) else v


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"only {','.join(QUICK_IDS)}; NCHW")
    p.add_argument("--json", metavar="PATH", help="also write the rows and machine info here")
    p.add_argument(
        "--markdown", metavar="PATH", help="also write a compact table (formats side by side)"
    )
    p.add_argument(
        "--format",
        choices=(*FORMATS, "both"),
        help="memory format(s) to run (default: both; nchw with --quick)",
    )
    p.add_argument("--only", metavar="ID,...", help="run only these case ids (e.g. C5,P1)")
    p.add_argument(
        "--conv",
        action="append",
        default=[],
        type=conv_spec,
        metavar="N,C,K,HW,KERNEL,STRIDE,PAD[,GROUPS]",
        help="also time a convolution of this shape (repeatable; ids X1, X2, ...); without "
        "--only, only these run",
    )
    p.add_argument(
        "--retries",
        type=int,
        help=f"retake a timing during which other processes used over {CONTENDED} cores up to "
        "this many times, after waiting for a quiet second (default: 3; 0 with --quick)",
    )
    steady_malloc.add_flag(p)
    p.add_argument(
        "--wait-budget",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="total time the run may spend waiting for other processes (default: 900)",
    )
    return p.parse_args(argv)


def print_preamble(info: dict[str, Any], ceilings: Ceilings) -> None:
    fc = info["fastcnn"]
    print(f"# {info['cpu']}, {THREADS} threads, torch {info['torch']}, {info['date']}")
    print(
        f"# torch: ATen {info['torch_cpu_capability']}, oneDNN ISA cap {info['onednn_max_cpu_isa']}"
    )
    print(f"# fastcnn {fc['version']} isa={fc['isa']}; load average {info['loadavg_start'][0]:.2f}")
    print(
        f"# ceilings: {ceilings.gflops:.1f} GFLOP/s ({ceilings.gflops_source}); "
        f"{ceilings.gbps:.1f} GB/s ({ceilings.gbps_source}); others {ceilings.others_cores:.2f}"
    )
    print(f"# torch.mm {MATMUL_N}^3 float32 for reference: {ceilings.matmul_gflops:.1f} GFLOP/s")
    print(
        "# torch/fc > 1: fastcnn faster; fc frac: roofline floor time / fastcnn time; others: "
        f"CPU cores other processes used while the row was timed (>= {CONTENDED}: contended); "
        "try: timings taken"
    )
    print(header(), flush=True)


def write_json(path: str, report: dict[str, Any], rows: list[Row]) -> None:
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["rows"] = [{k: _nan_to_none(v) for k, v in asdict(r).items()} for r in rows]
    with open(path, "w") as f:
        json.dump(report, f, indent=1, default=str)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    malloc = steady_malloc.pin(args.default_malloc)
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    min_run_time = 0.1 if args.quick else 0.5
    fmt_arg = args.format or ("nchw" if args.quick else "both")
    formats = list(FORMATS) if fmt_arg == "both" else [fmt_arg]
    extra = tuple(ConvShape(f"X{i + 1}", *values) for i, values in enumerate(args.conv))
    only = set(args.only.split(",")) if args.only else set(QUICK_IDS) if args.quick else None
    if extra:
        only = (only or set()) | {s.id for s in extra}
    retries = args.retries if args.retries is not None else 0 if args.quick else 3
    quiet = QuietPolicy(retries, args.wait_budget)

    info = machine_info()
    ceilings = measure_ceilings(min_run_time, quiet)
    print_preamble(info, ceilings)
    print(f"# malloc: {malloc}")
    rows = []
    for case in all_cases(formats, extra):
        if only is None or case.id in only:
            rows.append(run_case(case, ceilings, min_run_time, quiet))
            print(format_row(rows[-1]), flush=True)

    failed = [r for r in rows if r.status != "ok"]
    busy = sum(contended(r.others_cores) for r in rows)
    print(f"# {len(rows)} cases, {len(failed)} FAILED, {busy} timed on a busy machine")
    print("\n".join(geomean_lines(rows)))
    costs = [
        relu_cost(s, fmt, min_run_time, quiet)
        for fmt in formats
        for s in (*CONV_SHAPES, *extra)
        if only is None or s.id in only
    ]
    if costs:
        print("\n".join(relu_cost_lines(costs)), flush=True)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown_table(rows))
    if args.json:
        protocol = {
            "threads": THREADS,
            "min_run_time_s": min_run_time,
            "rounds": ROUNDS,
            "fused_relu_samples": SAMPLES,
            "retries": retries,
            "contended_cores": CONTENDED,
            "malloc": malloc,
            "argv": sys.argv,
        }
        report = {
            "machine": info,
            "protocol": protocol,
            "ceilings": ceilings.as_dict(),
            "fused_relu_cost": [asdict(c) for c in costs],
        }
        write_json(args.json, report, rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
