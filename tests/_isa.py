"""Runs a test script in a fresh interpreter with ``FASTCNN_ISA`` capping the kernels chosen at
load, so that every ISA's compiled kernels (generic, AVX2, AVX-512) are checked on a CPU that
has them. The script prints ``fastcnn.info()["isa"]`` last."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import fastcnn

ISAS = ["generic", "avx2", "avx512"]


def run_under_isa(isa: str, script: str, cases) -> None:
    """Runs ``script`` with ``cases`` (JSON) as its argument under ``isa``; skips ISAs this CPU
    lacks; fails on a nonzero exit or when another ISA ran."""
    order = {name: i for i, name in enumerate(ISAS)}
    native = fastcnn.info()["isa"]
    if order[isa] > order[native]:
        pytest.skip(f"this CPU runs {native}, not {isa}")
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "FASTCNN_ISA": isa},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.split()[-1] == isa
