"""CIFAR-10 from its local python batches (``cifar-10-batches-py``).

Nothing is downloaded. The batches are pickles; they are read with an unpickler that only
rebuilds NumPy arrays, so a tampered file fails with an error instead of running code.
"""

from __future__ import annotations

import codecs
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from ._checks import check_labels, check_seed
from .dataset import ImageData
from .split import carve_val, check_val_fraction

__all__ = ["CIFAR10_FILES", "cifar10"]

_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST = "test_batch"
_META = "batches.meta"
CIFAR10_FILES = (*_TRAIN, _TEST, _META)
_SHAPE = (3, 32, 32)  # each row of a batch: 1024 red, then green, then blue, row-major


def _array_globals() -> dict[tuple[str, str], object]:
    """The only globals a batch may name: what NumPy (1.x or 2.x, pickle protocol 2 to 5)
    uses to rebuild an array."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # NumPy 1.x
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes pickled by Python 3 at protocol 2
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        if hasattr(numeric, "_frombuffer"):
            allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    _allowed = _array_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name} (only NumPy arrays are allowed)"
            ) from None


def _unpickle(file: Path) -> dict:
    """The dict in a batch file, with str keys; ValueError naming the file when it is not a
    readable pickle of a dict."""
    with open(file, "rb") as f:
        try:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
        except Exception as e:  # a corrupt pickle can fail in many ways
            raise ValueError(
                f"cifar10: {file} is not a readable CIFAR-10 batch (truncated or corrupt): "
                f"{type(e).__name__}: {e}"
            ) from e
    if not isinstance(obj, dict):
        raise ValueError(f"cifar10: {file} must hold a dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _entry(batch: dict, key: str, file: Path) -> object:
    if key not in batch:
        raise ValueError(f"cifar10: {file} must have the key {key!r}, got keys {sorted(batch)}")
    return batch[key]


def _batch(file: Path, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 Tensor[N, 3, 32, 32] and labels int64 Tensor[N] of one batch file."""
    batch = _unpickle(file)
    data = _entry(batch, "data", file)
    row = int(np.prod(_SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        got = f"{data.dtype} shape {data.shape}" if isinstance(data, np.ndarray) else type(data)
        raise ValueError(f"cifar10: data in {file} must be uint8 [N, {row}], got {got}")
    if data.shape[1] != row:
        raise ValueError(f"cifar10: data in {file} must be [N, {row}], got {data.shape}")
    try:
        labels = torch.as_tensor(np.asarray(_entry(batch, "labels", file), dtype=np.int64))
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"cifar10: labels in {file} must be a list of ints: {e}") from e
    labels = check_labels("cifar10", labels, len(data), num_classes, f"labels in {file}")
    return torch.from_numpy(data.reshape(-1, *_SHAPE).copy()), labels


def _classes(file: Path) -> list[str]:
    names = _entry(_unpickle(file), "label_names", file)
    if not isinstance(names, (list, tuple)) or not names:
        raise ValueError(f"cifar10: label_names in {file} must be a non-empty list")
    classes = [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]
    if not all(isinstance(c, str) for c in classes):
        raise ValueError(f"cifar10: label_names in {file} must be strings, got {names!r}")
    return classes


def cifar10(path: str | os.PathLike, *, val_fraction: float = 0.1, seed: int = 0) -> ImageData:
    """CIFAR-10 from its python batches in ``path``: the official test set, and a val split
    carved (stratified, seeded) from the five training batches.

    Args:
        path: the folder holding data_batch_1 .. data_batch_5, test_batch and batches.meta
            (``cifar-10-batches-py`` of the official archive, extracted).
        val_fraction: the fraction of the training set held out for validation, in [0, 1);
            0 gives no val split.
        seed: the seed of the shuffle.

    Returns:
        ImageData whose splits yield (Tensor[3, 32, 32] float32, int64 label), classes from
        batches.meta ("airplane", "automobile", ...).
    """
    what = "cifar10"
    check_val_fraction(what, val_fraction)  # before reading any file
    check_seed(what, seed)
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what}: path must be an existing folder, got {str(path)!r}")
    missing = [n for n in CIFAR10_FILES if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{what}: {folder} lacks {', '.join(missing)}; nothing is downloaded, extract "
            "cifar-10-python.tar.gz and pass its cifar-10-batches-py folder"
        )
    classes = _classes(folder / _META)
    batches = [_batch(folder / n, len(classes)) for n in _TRAIN]
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    test_images, test_labels = _batch(folder / _TEST, len(classes))
    return carve_val(what, images, labels, test_images, test_labels, classes, val_fraction, seed)
