"""glibc's malloc thresholds, pinned for a benchmark run so that page faults do not pick the
result.

glibc serves an allocation above its mmap threshold from a fresh mapping, which faults in one
4 KiB page at a time (the kernel zeroes each) and is unmapped again when freed. The threshold
starts at 128 KiB and rises to the size of the largest mapped block freed so far, up to
32 MiB. Whether a 1-32 MiB temporary or output faults in afresh on every call therefore
depends on what the process allocated and freed before: torch's NCHW depthwise convolution
(DW) took 4-6 ms in some processes and 28-30 ms in others, fastcnn's channels_last max-pool
training step (P1) 3.2 or 10.1 ms (bench/NOTES.md, "Sixth session").

Pinned (``MALLOC_MMAP_THRESHOLD_`` = 32 MiB, ``MALLOC_TRIM_THRESHOLD_`` = 128 MiB), every
block under 32 MiB comes from the heap and stays mapped, as in a long-running process once
the threshold has risen: both sides are timed in that steady state. Blocks of 32 MiB and more
are mapped afresh either way. ``--default-malloc`` runs with glibc's own dynamic thresholds.
"""

from __future__ import annotations

import argparse
import os
import sys

PINNED = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(128 << 20)}


def add_flag(parser: argparse.ArgumentParser) -> None:
    """The ``--default-malloc`` switch every bench script takes."""
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="keep glibc's dynamic mmap threshold (default: pinned, see steady_malloc.py)",
    )


def pin(default: bool) -> str:
    """Re-executes the running script with glibc's thresholds pinned, unless they already are
    or ``default`` asks for glibc's dynamic ones; returns the mode, for the report."""
    if default:
        return "glibc default (dynamic mmap threshold)"
    if any(os.environ.get(k) != v for k, v in PINNED.items()):
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **PINNED})
    return "pinned: " + ", ".join(f"{k}={v}" for k, v in PINNED.items())
