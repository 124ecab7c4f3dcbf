"""Loads the compiled module once, with an error that says what to do when it is missing."""

from __future__ import annotations

try:
    from . import _C
except ImportError as e:  # pragma: no cover - only on a broken install
    raise ImportError(
        "fastcnn's compiled extension fastcnn._C could not be loaded "
        f"({e}). Reinstall with `pip install --force-reinstall fastcnn`, or from a source "
        "checkout with `pip install .`; importing from the source tree without building "
        "does not work."
    ) from e

__all__ = ["_C"]
