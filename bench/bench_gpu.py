"""GPU benchmark: fastcnn's CUDA kernels against PyTorch eager (cuDNN) on the same device.

Usage::

    python bench/bench_gpu.py                      # every GPU case of BENCH.md
    python bench/bench_gpu.py --quick              # a representative subset, about a minute
    python bench/bench_gpu.py --only C5,P1 --dtype bfloat16 --json results.json

Cases (ids as in ../shared/BENCH.md, GPU batch sizes): the convolutions C1..C12, D1, D2 and
DW, each timed forward with bias, fused bias+ReLU (against torch's conv with bias followed by
an in-place ReLU), backward-data and backward-weight (against the
``aten.convolution_backward`` call autograd makes, with that one gradient's output mask), in
float32 and bfloat16, channels_last and NCHW; max pooling P1/P3 forward and forward+backward
(fastcnn keeps compact window offsets; torch's autograd keeps int64 indices); global average
pooling G3/G2 forward and backward; R1 ReLU forward, backward and guided-ReLU backward
(against ReLU's backward followed by ``clamp(min=0)``).

Protocol: ``torch.backends.cudnn.benchmark = True``; TF32 for float32 convolutions stated by
``--tf32`` (on by default, as PyTorch's own conv) and set identically on both sides; each
case first checks fastcnn's result against torch's (relative error ||a - b|| / ||b|| under
the dtype's tolerance) and reports no speed for a wrong or raising kernel (FAILED, exit
status 1); then both sides are timed with CUDA events, one event pair per call, after a
warm-up, with a 256 MB write between calls so that L2 holds no operand; medians. Ceilings
are measured at the start: device copy bandwidth (``y.copy_(x)`` on 1 GB, read + write) and
a bfloat16 / TF32 8192^3 matmul. "frac" is the roofline floor ``max(flops / matmul rate,
bytes / copy bandwidth)`` over fastcnn's time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial

import torch
import torch.nn.functional as F

os.environ.setdefault("FASTCNN_CUDA_UNVERIFIED", "1")
from fastcnn.ops import _cuda as fc  # noqa: E402

Fn = Callable[[], torch.Tensor]
QUICK_IDS = ("C2", "C5", "C11", "DW", "P1", "G2", "R1")
TOL = {"float32": 1e-5, "tf32": 5e-3, "bfloat16": 3e-2}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
FORMATS = {"channels_last": torch.channels_last, "nchw": torch.contiguous_format}


@dataclass
class Case:
    id: str
    op: str
    fmt: str
    dtype: str
    shape: str
    flops: float
    bytes: float
    build: Callable[[], tuple[Fn, Fn]]
    tol: float


@dataclass
class Row:
    id: str
    op: str
    fmt: str
    dtype: str
    shape: str
    fastcnn_ms: float
    torch_ms: float
    ratio: float
    frac: float
    status: str


# --- timing -------------------------------------------------------------------------------------

_FLUSH: torch.Tensor | None = None


def _flush_l2() -> None:
    global _FLUSH
    if _FLUSH is None:
        _FLUSH = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    _FLUSH.zero_()


def time_ms(fn: Fn, reps: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        _flush_l2()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    if a.isnan().any() or a.shape != b.shape:
        return math.inf
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


# --- ceilings -----------------------------------------------------------------------------------


@dataclass
class Ceilings:
    copy_gbs: float
    tf32_tflops: float
    bf16_tflops: float


def measure_ceilings() -> Ceilings:
    x = torch.empty(2**28, dtype=torch.float32, device="cuda").normal_()
    y = torch.empty_like(x)
    ms = time_ms(lambda: y.copy_(x), 10)
    copy_gbs = 2 * x.numel() * 4 / ms / 1e6
    n = 8192
    rates = []
    for dtype, tf32 in ((torch.float32, True), (torch.bfloat16, False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        b = torch.randn(n, n, device="cuda", dtype=dtype)
        ms = time_ms(lambda a=a, b=b: a @ b, 10)
        rates.append(2 * n**3 / ms / 1e9)
    torch.backends.cuda.matmul.allow_tf32 = False
    return Ceilings(copy_gbs, rates[0], rates[1])


# --- convolution cases --------------------------------------------------------------------------

# id: (N, C, K, H=W, kernel, stride, pad, groups); GPU batch sizes of BENCH.md
CONV_SHAPES = {
    "C1": (1, 3, 64, 224, 7, 2, 3, 1),
    "C2": (64, 3, 64, 224, 7, 2, 3, 1),
    "C4": (1, 64, 64, 56, 3, 1, 1, 1),
    "C5": (64, 64, 64, 56, 3, 1, 1, 1),
    "C6": (64, 128, 128, 28, 3, 1, 1, 1),
    "C7": (64, 256, 256, 14, 3, 1, 1, 1),
    "C9": (64, 512, 512, 7, 3, 1, 1, 1),
    "C10": (64, 128, 128, 56, 3, 2, 1, 1),
    "C11": (64, 64, 256, 56, 1, 1, 0, 1),
    "C12": (64, 1024, 256, 14, 1, 1, 0, 1),
    "D1": (64, 1, 32, 32, 3, 1, 1, 1),
    "D2": (64, 32, 64, 16, 3, 1, 1, 1),
    "DW": (8, 256, 256, 56, 3, 1, 1, 256),
}


def conv_cases(dtype: str, fmt: str, tf32: bool) -> Iterator[Case]:
    for cid, (n, c, k, hw, r, st, pad, groups) in CONV_SHAPES.items():
        ho = (hw + 2 * pad - r) // st + 1
        flops = 2.0 * n * k * ho * ho * (c // groups) * r * r
        esize = torch.empty((), dtype=DTYPES[dtype]).element_size()
        io = (n * c * hw * hw + k * (c // groups) * r * r + n * k * ho * ho) * esize
        shape = f"{n}x{c}x{hw}x{hw}->{k} {r}x{r}/{st} p{pad}" + (
            f" g{groups}" if groups > 1 else ""
        )
        tol = TOL["tf32" if dtype == "float32" and tf32 else dtype]
        geometry = ((st, st), (pad, pad), (pad, pad), (1, 1), groups)
        spec = (n, c, k, hw, r, st, pad, groups)
        for op in ("fwd", "fwd+bias+relu", "bwd-data", "bwd-weight"):
            build = _conv_builder(spec, geometry, op, DTYPES[dtype], FORMATS[fmt], tf32)
            yield Case(cid, f"conv {op}", fmt, dtype, shape, flops, io, build, tol)


def _conv_builder(spec, geometry, op, dtype, fmt, tf32):
    n, c, k, hw, r, st, pad, groups = spec

    def build() -> tuple[Fn, Fn]:
        x = torch.randn(n, c, hw, hw, device="cuda").to(dtype).contiguous(memory_format=fmt)
        w = torch.randn(k, c // groups, r, r, device="cuda") / math.sqrt(c // groups * r * r)
        w = w.to(dtype).contiguous(memory_format=fmt)
        b = torch.randn(k, device="cuda").to(dtype)
        y = F.conv2d(x, w, b, st, pad, 1, groups)
        dy = torch.randn_like(y)
        cl = fmt == torch.channels_last
        args = dict(
            stride=[st, st],
            padding=[pad, pad],
            dilation=[1, 1],
            transposed=False,
            output_padding=[0, 0],
            groups=groups,
            bias_sizes=None,
        )
        if op == "fwd":
            return (
                lambda: fc.conv2d(x, w, b, *geometry, allow_tf32=tf32),
                lambda: F.conv2d(x, w, b, st, pad, 1, groups),
            )
        if op == "fwd+bias+relu":
            return (
                lambda: fc.conv2d(x, w, b, *geometry, relu=True, allow_tf32=tf32),
                lambda: F.conv2d(x, w, b, st, pad, 1, groups).relu_(),
            )
        if op == "bwd-data":
            return (
                lambda: fc.conv2d_backward_input(dy, w, x.shape, cl, *geometry, allow_tf32=tf32),
                lambda: torch.ops.aten.convolution_backward(
                    dy, x, w, output_mask=[True, False, False], **args
                )[0],
            )
        return (
            lambda: fc.conv2d_backward_weight(dy, x, w.shape, cl, *geometry, allow_tf32=tf32),
            lambda: torch.ops.aten.convolution_backward(
                dy, x, w, output_mask=[False, True, False], **args
            )[1],
        )

    return build


# --- memory-bound cases -------------------------------------------------------------------------


def _rand(shape, dtype, fmt) -> torch.Tensor:
    return torch.randn(*shape, device="cuda").to(dtype).contiguous(memory_format=fmt)


def pool_cases(dtype: str, fmt: str) -> Iterator[Case]:
    dt, mf = DTYPES[dtype], FORMATS[fmt]
    es = torch.empty((), dtype=dt).element_size()
    for pid, shape, (k, s, p) in (
        ("P1", (64, 64, 112, 112), (3, 2, 1)),
        ("P3", (64, 64, 224, 224), (2, 2, 0)),
    ):
        geometry = ((k, k), (s, s), (p, p), (1, 1), False)
        n, c, h, w = shape
        ho = (h + 2 * p - k) // s + 1
        x_bytes, y_bytes = n * c * h * w * es, n * c * ho * ho * es
        label = f"{n}x{c}x{h}x{w} {k}x{k}/{s} p{p}"

        def fwd(shape=shape, geometry=geometry, k=k, s=s, p=p):
            x = _rand(shape, dt, mf)
            return (lambda: fc.max_pool2d(x, *geometry, False)[0], lambda: F.max_pool2d(x, k, s, p))

        def step(shape=shape, geometry=geometry, k=k, s=s, p=p, yshape=(n, c, ho, ho), det=False):
            x = _rand(shape, dt, mf)
            xr = x.clone().requires_grad_()
            dy = _rand(yshape, dt, mf)

            def fast():
                out, offsets = fc.max_pool2d(x, *geometry, False)
                return fc.max_pool2d_backward(dy, x, offsets, *geometry, deterministic=det)

            def ref():
                xr.grad = None
                F.max_pool2d(xr, k, s, p).backward(dy)
                return xr.grad

            return fast, ref

        yield Case(pid, "maxpool fwd", fmt, dtype, label, 0, x_bytes + y_bytes, fwd, 0)
        # Compulsory traffic: x read, y written, offsets written and read, dy read, dx written.
        step_bytes = 2 * x_bytes + 2 * y_bytes + 2 * y_bytes // es
        # Overlapping windows add gradients in another order than torch does.
        step_tol = 1e-5 if dtype == "float32" else 1e-2
        yield Case(pid, "maxpool fwd+bwd", fmt, dtype, label, 0, step_bytes, step, step_tol)
        # The deterministic backward gathers: dx written once, without zeroing it first.
        det = partial(step, det=True)
        yield Case(pid, "maxpool fwd+bwd det", fmt, dtype, label, 0, step_bytes, det, step_tol)


def gap_cases(dtype: str, fmt: str) -> Iterator[Case]:
    dt, mf = DTYPES[dtype], FORMATS[fmt]
    es = torch.empty((), dtype=dt).element_size()
    for gid, shape in (("G3", (64, 512, 7, 7)), ("G2", (256, 2048, 7, 7))):
        n, c, h, w = shape
        nbytes = (n * c * h * w + n * c) * es
        label = "x".join(map(str, shape))

        def fwd(shape=shape):
            x = _rand(shape, dt, mf)
            return lambda: fc.global_avg_pool2d(x), lambda: x.mean((2, 3))

        def bwd(shape=shape):
            dy = torch.randn(shape[:2], device="cuda").to(dt)
            cl = mf == torch.channels_last
            hw = shape[2] * shape[3]
            return (
                lambda: fc.global_avg_pool2d_backward(dy, shape, cl),
                lambda: (dy[:, :, None, None] / hw).expand(shape).contiguous(memory_format=mf),
            )

        yield Case(gid, "gap fwd", fmt, dtype, label, 0, nbytes, fwd, 1e-2)
        yield Case(gid, "gap bwd", fmt, dtype, label, 0, nbytes, bwd, 1e-2)


def relu_cases(dtype: str, fmt: str) -> Iterator[Case]:
    dt, mf = DTYPES[dtype], FORMATS[fmt]
    shape = (64, 64, 112, 112)
    nbytes = math.prod(shape) * torch.empty((), dtype=dt).element_size()
    label = "x".join(map(str, shape))

    def fwd():
        x = _rand(shape, dt, mf)
        return lambda: fc.relu(x), lambda: torch.relu(x)

    def bwd(guided: bool):
        def build():
            y, dy = _rand(shape, dt, mf).relu(), _rand(shape, dt, mf)

            def ref():
                g = torch.ops.aten.threshold_backward(dy, y, 0)
                return g.clamp_(min=0) if guided else g

            return lambda: fc.relu_backward(dy, y, guided), ref

        return build

    yield Case("R1", "relu fwd", fmt, dtype, label, 0, 2 * nbytes, fwd, 0)
    yield Case("R1", "relu bwd", fmt, dtype, label, 0, 3 * nbytes, bwd(False), 0)
    yield Case("R1", "guided-relu bwd", fmt, dtype, label, 0, 3 * nbytes, bwd(True), 0)


# --- running ------------------------------------------------------------------------------------


def run_case(case: Case, ceilings: Ceilings, tf32: bool, reps: int) -> Row:
    row = Row(
        case.id,
        case.op,
        case.fmt,
        case.dtype,
        case.shape,
        math.nan,
        math.nan,
        math.nan,
        math.nan,
        "ok",
    )
    try:
        fast, ref = case.build()
        err = rel_err(fast(), ref())
        if not err <= case.tol:
            row.status = f"FAILED (relative error {err:.2e} > {case.tol:.0e})"
            return row
        row.fastcnn_ms = time_ms(fast, reps)
        row.torch_ms = time_ms(ref, reps)
    except Exception as e:  # a raising kernel is a failed row, the run goes on
        row.status = f"FAILED ({type(e).__name__}: {str(e)[:120]})"
        return row
    row.ratio = row.torch_ms / row.fastcnn_ms
    rate = (
        ceilings.bf16_tflops
        if case.dtype == "bfloat16"
        else (ceilings.tf32_tflops if tf32 else ceilings.tf32_tflops / 8)
    )
    floor_ms = max(case.flops / rate / 1e9, case.bytes / ceilings.copy_gbs / 1e6)
    row.frac = floor_ms / row.fastcnn_ms
    return row


def all_cases(args) -> Iterator[Case]:
    for dtype in args.dtype:
        for fmt in args.format:
            yield from conv_cases(dtype, fmt, args.tf32)
            yield from pool_cases(dtype, fmt)
            yield from gap_cases(dtype, fmt)
            yield from relu_cases(dtype, fmt)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help=f"only {','.join(QUICK_IDS)}")
    p.add_argument("--only", help="comma-separated case ids (C5,P1,...)")
    p.add_argument("--dtype", default="float32,bfloat16", help="float32,bfloat16")
    p.add_argument("--format", default="channels_last,nchw", help="channels_last,nchw")
    p.add_argument("--tf32", type=int, default=1, help="1: TF32 for float32 convs on both sides")
    p.add_argument("--reps", type=int, default=25)
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    args.dtype = args.dtype.split(",")
    args.format = args.format.split(",")
    args.ids = set(args.only.split(",")) if args.only else (set(QUICK_IDS) if args.quick else None)
    args.tf32 = bool(args.tf32)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.manual_seed(0)
    prop = torch.cuda.get_device_properties(0)
    ceilings = measure_ceilings()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"# {prop.name}, {prop.multi_processor_count} SMs; torch {torch.__version__}, "
        f"cuDNN {torch.backends.cudnn.version()}; {when}"
    )
    print(
        f"# ceilings: copy {ceilings.copy_gbs:.0f} GB/s, TF32 matmul "
        f"{ceilings.tf32_tflops:.0f} TFLOP/s, BF16 matmul {ceilings.bf16_tflops:.0f} TFLOP/s; "
        f"TF32 for float32 convolutions: {'on' if args.tf32 else 'off'} (both sides)"
    )
    head = (
        f"{'id':4} {'op':18} {'format':13} {'dtype':8} {'shape':34} {'fc ms':>8} "
        f"{'torch ms':>8} {'torch/fc':>8} {'frac':>5}"
    )
    print(head, flush=True)
    rows = []
    for case in all_cases(args):
        if args.ids is not None and case.id not in args.ids:
            continue
        r = run_case(case, ceilings, args.tf32, args.reps)
        rows.append(r)
        tail = r.status if r.status != "ok" else ""
        print(
            f"{r.id:4} {r.op:18} {r.fmt:13} {r.dtype:8} {r.shape:34} {r.fastcnn_ms:8.3f} "
            f"{r.torch_ms:8.3f} {r.ratio:8.2f} {r.frac:5.2f} {tail}",
            flush=True,
        )
    failed = sum(r.status != "ok" for r in rows)
    ok = [r for r in rows if r.status == "ok"]
    for group in ("conv fwd", "conv bwd-data", "conv bwd-weight"):
        for dtype in args.dtype:
            for fmt in args.format:
                sel = [r.ratio for r in ok if r.op == group and r.dtype == dtype and r.fmt == fmt]
                if sel:
                    geo = math.exp(sum(map(math.log, sel)) / len(sel))
                    print(
                        f"# geomean torch/fastcnn {group:16} {dtype:8} {fmt:13} {geo:.2f} "
                        f"over {len(sel)} shapes"
                    )
    print(f"# {len(rows)} rows, {failed} FAILED")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "device": prop.name,
                    "when": when,
                    "ceilings": asdict(ceilings),
                    "tf32": args.tf32,
                    "rows": [asdict(r) for r in rows],
                },
                f,
                indent=1,
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
