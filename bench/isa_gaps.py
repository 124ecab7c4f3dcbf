"""The conv kernels of each ISA's build timed against each other, in one process.

The tests compare every ISA's results with torch's, never their speed, and every benchmark
runs the ISA the machine chooses: an AVX2 micro-kernel that kept its sums on the stack ran at
1/20 of its speed, slower than the portable build, and nothing noticed. This script loads the
installed extension a second and third time (copies of its ``_C`` library, so each keeps its
own choice), capped by ``FASTCNN_ISA`` at load to ``avx2`` and ``generic``, checks every
build's result against torch's, and times the builds in bench_cpu's paired samples. It fails
(exit status 1) where a narrower build falls further behind a wider one than vector width
explains:

- AVX2 taking more than ``--avx2-limit`` (5) times the AVX-512 build's time: half the lanes
  account for 2x, memory-bound rows for less; the widest gap measured (D1's forward, which
  on AVX2 lacks the row-window path of 32-wide rows) is 2.0-4.3x across runs;
- AVX2 taking more than ``--generic-limit`` (1.25) times the portable build's.

Rows run only for the ISAs this CPU has. ``.ci/run`` runs it after the tests.

Usage::

    python bench/isa_gaps.py [--only C1,DW] [--min-run-time 0.2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from types import ModuleType

import bench_cpu
import steady_malloc
import torch
from ab_builds import PASSES, load_build, paired_times

from fastcnn.ops._boundary import _C

# Every conv route: the stem (C1), Winograd (C5, C9, D2), direct GEMMs (C10, C11), the
# single-channel layer (D1), depthwise (DW).
CASES = ("C1", "C5", "C9", "C10", "C11", "D1", "D2", "DW")


def load_capped(isa: str, directory: str) -> ModuleType | None:
    """A copy of the installed extension that chose its kernels under FASTCNN_ISA=isa; None
    when this CPU lacks the ISA (the copy fell back to a narrower one)."""
    path = os.path.join(directory, f"{isa}_{os.path.basename(_C.__file__)}")
    shutil.copyfile(_C.__file__, path)  # a file of its own: dlopen shares one path's statics
    before = os.environ.get("FASTCNN_ISA")
    os.environ["FASTCNN_ISA"] = isa
    try:
        module = load_build(path, f"fastcnn_{isa}._C")
        chosen = module.isa()  # the choice is made at the first kernel lookup, here
    finally:
        if before is None:
            del os.environ["FASTCNN_ISA"]
        else:
            os.environ["FASTCNN_ISA"] = before
    return module if chosen == isa else None


def gap(
    narrow: ModuleType, wide: ModuleType, s: bench_cpu.ConvShape, fmt: str, op: str, t: float
) -> float:
    """The median over paired samples of narrow's time / wide's, both results checked."""
    return bench_cpu.median_ratio(*paired_times(narrow, wide, s, fmt, op, t))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="case ids (default: " + ",".join(CASES) + ")")
    parser.add_argument("--min-run-time", type=float, default=0.2, help="seconds per pair")
    parser.add_argument("--avx2-limit", type=float, default=5.0)
    parser.add_argument("--generic-limit", type=float, default=1.25)
    steady_malloc.add_flag(parser)
    args = parser.parse_args()
    steady_malloc.pin(args.default_malloc)
    torch.set_num_threads(bench_cpu.THREADS)
    ids = set(args.only.split(",")) if args.only else set(CASES)
    with tempfile.TemporaryDirectory() as directory:
        builds = {isa: load_capped(isa, directory) for isa in ("avx512", "avx2", "generic")}
        if builds["avx2"] is None:
            print("isa_gaps: this CPU has no AVX2; nothing to compare")
            return 0
        pairs = [("avx2", "generic", args.generic_limit)]
        if builds["avx512"] is not None:
            pairs.insert(0, ("avx2", "avx512", args.avx2_limit))
        failures = []
        print(f"{'case':5}{'format':14}{'pass':17}" + "".join(f"{n}/{w:10}" for n, w, _ in pairs))
        for s in bench_cpu.CONV_SHAPES:
            if s.id not in ids:
                continue
            for fmt in ("nchw", "channels_last"):
                for op in PASSES:
                    line = f"{s.id:5}{fmt:14}{op:17}"
                    for narrow, wide, limit in pairs:
                        ratio = gap(builds[narrow], builds[wide], s, fmt, op, args.min_run_time)
                        line += f"{ratio:13.2f}" + (" !" if ratio > limit else "  ")
                        if ratio > limit:
                            failures.append(f"{s.id} {fmt} {op}: {narrow} {ratio:.2f}x {wide}")
                    print(line, flush=True)
    for failure in failures:
        print(f"isa_gaps: {failure}, over the limit")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
