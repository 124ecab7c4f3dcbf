"""Every script in examples/ runs as a user would run it (python SCRIPT, in an empty folder)
and does what its docstring says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytest.importorskip("matplotlib", reason="the examples need the viz extra")
pytest.importorskip("sklearn", reason="the examples need the viz extra")


def _run(name: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_example_is_tested():
    tested = {"convert_model.py", "train_digits.py", "explain_digits.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_convert_model():
    out = _run("convert_model.py")
    assert re.search(r"converted 11 layers: stem\.0: Conv2d", out), out
    # The script itself compares outputs and gradients with torch's (and fails if they differ).
    assert len(re.findall(r"outputs differ by at most", out)) == 2, out
    assert re.search(r"torch [\d.]+ ms, fastcnn [\d.]+ ms", out), out


def test_train_digits():
    out = _run("train_digits.py")
    assert len(re.findall(r"^epoch \d: validation loss", out, re.M)) == 4, out
    accuracy = float(re.search(r"test accuracy ([\d.]+)%", out).group(1))
    assert accuracy > 80, out  # chance is 10%
    assert _is_png(Path("digits_curves.png"))
    assert Path("digits_run/best.pt").is_file() and Path("digits_run/last.pt").is_file()


def test_explain_digits():
    out = _run("explain_digits.py")
    assert re.search(r"predicted \[[\d, ]+\] for labels \[[\d, ]+\]", out), out
    assert _is_png(Path("digits_explained.png"))
