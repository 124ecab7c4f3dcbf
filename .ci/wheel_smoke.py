"""Smoke test of an installed fastcnn wheel, run from outside the source tree (by .ci/wheel):
the import, info(), a conv forward/backward against torch, convert() on a small model, a CUDA
tensor's error, and OpenMP: one runtime in the process, and torch's thread count honoured."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import textwrap

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

import fastcnn


def check_install(cuda_archs: list[str]) -> None:
    assert "site-packages" in fastcnn.__file__, f"fastcnn imported from {fastcnn.__file__}"
    report = json.loads(
        subprocess.run(["fastcnn", "info", "--json"], check=True, capture_output=True).stdout
    )
    assert report == json.loads(json.dumps(fastcnn.info())), report
    assert report["cuda_compiled"] and report["cuda_archs"] == cuda_archs, report
    assert report["isa"] in ("avx512", "avx2", "generic"), report
    print(f"installed: {fastcnn.__file__}, isa {report['isa']}, archs {report['cuda_archs']}")


def check_conv() -> None:
    for dtype, tol in ((torch.float32, 1e-4), (torch.float64, 1e-10)):
        for fmt in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(2, 6, 13, 11, dtype=dtype).contiguous(memory_format=fmt)
            w = torch.randn(8, 3, 3, 3, dtype=dtype, requires_grad=True)
            b = torch.randn(8, dtype=dtype, requires_grad=True)
            x.requires_grad_()
            kw = dict(stride=(2, 1), padding=1, groups=2)
            got = fastcnn.ops.conv2d(x, w, b, **kw, activation="relu")
            want = F.conv2d(x, w, b, **kw).relu()
            grads = torch.autograd.grad(got, (x, w, b), torch.ones_like(got))
            wants = torch.autograd.grad(want, (x, w, b), torch.ones_like(want))
            for a, e in zip((got, *grads), (want, *wants)):
                torch.testing.assert_close(a, e, rtol=tol, atol=tol)
    print("conv2d forward/backward (fused ReLU, groups, stride) matches torch")


def check_convert() -> None:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3), torch.nn.ReLU(inplace=True),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 4),
    )  # fmt: skip
    fast = fastcnn.nn.convert(model)
    kinds = {
        type(m).__module__.split(".")[0] for m in fast.modules() if len(list(m.children())) == 0
    }
    assert "fastcnn" in kinds, kinds
    x = torch.randn(3, 3, 20, 20)
    torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)
    print("convert(): the converted model computes what the original does")


def check_cuda_message() -> None:
    with FakeTensorMode():
        x = torch.empty(1, 3, 8, 8, device="cuda")
        w = torch.empty(4, 3, 3, 3, device="cuda")
        try:
            fastcnn.ops.conv2d(x, w)
        except RuntimeError as e:
            message = str(e)
        else:
            raise AssertionError("a CUDA tensor reached fastcnn.ops.conv2d without an error")
    assert re.search(r"conv2d: input .*cuda.*no verified CUDA kernels", message), message
    print(f"a CUDA tensor gets: {message}")


_THREADS = textwrap.dedent(
    """
    import os, torch, torch.nn.functional as F, fastcnn
    count = lambda: len(os.listdir("/proc/self/task"))
    x, w = torch.randn(8, 32, 48, 48), torch.randn(64, 32, 3, 3)
    for n in (1, 2, 3):
        torch.set_num_threads(n)
        before = count()
        got = fastcnn.ops.conv2d(x, w, padding=1)
        after_fastcnn = count()
        ref = F.conv2d(x, w, padding=1)  # a Winograd shape: its bound is 1e-4 of max |y|
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-4 * float(ref.abs().max()))
        print(n, after_fastcnn - before, count() - after_fastcnn)
    """
)


def check_openmp() -> None:
    """auditwheel grafts a copy of libgomp into the wheel; torch ships its own. Both load, but
    fastcnn's OpenMP calls must bind to one runtime (torch's, loaded first and globally), so
    one thread pool serves both libraries and torch.set_num_threads governs fastcnn too."""
    env = {**os.environ, "LD_DEBUG": "bindings", "LD_BIND_NOW": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _THREADS], env=env, capture_output=True, text=True, check=True
    )
    binds = re.findall(
        r"binding file (\S+) \[\d+\] to (\S+) \[\d+\]: normal symbol `(\w+)'", proc.stderr
    )
    ours = {lib for f, lib, sym in binds if "fastcnn/_C" in f and sym.startswith(("GOMP_", "omp_"))}
    torch_omp = {lib for f, lib, sym in binds if "libtorch_cpu" in f and sym == "GOMP_parallel"}
    assert len(ours) == 1 and ours == torch_omp, (ours, torch_omp)
    print(f"fastcnn's OpenMP calls bind to {ours.pop()}, as torch's do")
    # One pool of n - 1 threads (the caller is the n-th) grows as n does; torch reuses it.
    rows = [tuple(map(int, line.split())) for line in proc.stdout.split("\n") if line]
    assert rows == [(1, 0, 0), (2, 1, 0), (3, 1, 0)], rows
    print("torch.set_num_threads(1, 2, 3): fastcnn ran that many threads, results match torch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuda-archs", default="", help="info()['cuda_archs'], comma-separated")
    args = parser.parse_args()
    torch.manual_seed(0)
    check_install([a for a in args.cuda_archs.split(",") if a])
    check_conv()
    check_convert()
    check_cuda_message()
    check_openmp()
    print("wheel_smoke: OK")


if __name__ == "__main__":
    main()
