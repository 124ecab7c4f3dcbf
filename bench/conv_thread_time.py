"""Single-thread CPU time of one conv2d forward: fastcnn's Winograd ("auto"), fastcnn's direct
path and torch, on the BENCH.md 3x3 stride-1 shapes.

A companion to bench_cpu.py for a shared machine: with one thread every op runs on the
calling thread, so ``time.thread_time`` counts only the CPU time this op used, and other
processes change it far less than they change wall-clock times of 2-thread parallel regions
(which wait for both threads to be scheduled). Not a replacement for the 2-thread wall-clock
protocol; each row is the minimum over 7 repeats of at least 50 ms.

    python bench/conv_thread_time.py --only C5,C9 --format channels_last
"""

from __future__ import annotations

import argparse
import functools
import time

import torch
import torch.nn.functional as F

import fastcnn.ops as ops

SHAPES = {  # id: (N, C, K, H=W), 3x3, stride 1, padding 1
    "C4": (1, 64, 64, 56),
    "C5": (8, 64, 64, 56),
    "C6": (8, 128, 128, 28),
    "C7": (8, 256, 256, 14),
    "C9": (8, 512, 512, 7),
    "D2": (64, 32, 64, 16),
}


def thread_ms(fn, repeats: int = 7, min_s: float = 0.05) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        calls, start = 0, time.thread_time()
        while (elapsed := time.thread_time() - start) < min_s or calls == 0:
            fn()
            calls += 1
        best = min(best, elapsed / calls)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SHAPES), help="shape ids (default: all)")
    parser.add_argument("--format", choices=["nchw", "channels_last", "both"], default="both")
    args = parser.parse_args()
    torch.set_num_threads(1)
    formats = ["nchw", "channels_last"] if args.format == "both" else [args.format]
    print("id  format         winograd ms  direct ms  torch ms  torch/winograd  direct/winograd")
    for name in args.only.split(","):
        n, c, k, h = SHAPES[name]
        for fmt in formats:
            mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
            x = torch.randn(n, c, h, h).contiguous(memory_format=mf)
            w = (torch.randn(k, c, 3, 3) / (3 * c**0.5)).contiguous(memory_format=mf)
            b = torch.randn(k)
            torch.testing.assert_close(
                ops.conv2d(x, w, b, padding=1), F.conv2d(x, w, b, padding=1), rtol=1e-4, atol=1e-4
            )
            fast = functools.partial(ops.conv2d, x, w, b, padding=1)
            wino = thread_ms(fast)
            with ops.use_conv_algorithm("direct"):
                direct = thread_ms(fast)
            ref = thread_ms(functools.partial(F.conv2d, x, w, b, padding=1))
            print(
                f"{name:3} {fmt:14} {wino:11.3f} {direct:10.3f} {ref:9.3f} "
                f"{ref / wino:15.2f} {direct / wino:16.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
