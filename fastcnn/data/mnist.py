"""MNIST (and any dataset in its layout, such as Fashion-MNIST) from local IDX files.

Nothing is downloaded: the four files of http://yann.lecun.com/exdb/mnist/ must be in the
folder, each plain or gzipped (``.gz``); ``train-images.idx3-ubyte`` style names (a dot for
the dash) are accepted too.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ._checks import check_labels, check_seed
from .dataset import ImageData
from .split import carve_val, check_val_fraction

__all__ = ["MNIST_FILES", "find_mnist_file", "mnist", "read_idx"]

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one MNIST uses
_NUM_CLASSES = 10


def find_mnist_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` or one of its accepted variants (``.gz``, a dot for the last dash)."""
    dotted = ".".join(name.rsplit("-", 1))
    for candidate in (name, dotted):
        for suffix in ("", ".gz"):
            file = folder / (candidate + suffix)
            if file.is_file():
                return file
    return None


def _read_bytes(file: Path) -> bytes:
    if file.suffix != ".gz":
        return file.read_bytes()
    try:
        with gzip.open(file, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(
            f"mnist: {file} is not a valid gzip file (truncated or corrupt): {e}"
        ) from e


def read_idx(file: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX file (optionally gzipped) with ``ndim`` dimensions as a uint8
    array of the shape its header gives; ValueError naming the file when the magic number
    or the length is wrong."""
    raw = _read_bytes(file)
    header = 4 + 4 * ndim
    expected = (_UBYTE << 8) | ndim
    if len(raw) < header:
        raise ValueError(
            f"mnist: {file} is truncated or not an IDX file: {len(raw)} bytes, shorter than "
            f"its {header}-byte header"
        )
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected:
        raise ValueError(
            f"mnist: {file} has magic number 0x{magic:08x}, expected 0x{expected:08x} "
            f"(an unsigned-byte IDX file with {ndim} dimension(s))"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = math.prod(shape)
    if len(raw) - header != count:
        raise ValueError(
            f"mnist: {file} is truncated or corrupt: its header gives shape {shape}, "
            f"{count} bytes of data, but it holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, count=count, offset=header).reshape(shape).copy()


def _split(folder: Path, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 Tensor[N, 1, H, W] and labels int64 Tensor[N] of ``part``."""
    images_file = find_mnist_file(folder, MNIST_FILES[f"{part}_images"])
    labels_file = find_mnist_file(folder, MNIST_FILES[f"{part}_labels"])
    images = torch.from_numpy(read_idx(images_file, 3)).unsqueeze(1)
    labels = check_labels(
        "mnist",
        torch.from_numpy(read_idx(labels_file, 1)),
        len(images),
        _NUM_CLASSES,
        f"the labels of {labels_file} (for {images_file.name})",
    )
    return images, labels


def mnist(path: str | os.PathLike, *, val_fraction: float = 0.1, seed: int = 0) -> ImageData:
    """MNIST from the four IDX files in ``path``: the official test set, and a val split
    carved (stratified, seeded) from the official training set.

    Args:
        path: the folder holding train-images-idx3-ubyte, train-labels-idx1-ubyte,
            t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each optionally ``.gz``).
        val_fraction: the fraction of the training set held out for validation, in [0, 1);
            0 gives no val split.
        seed: the seed of the shuffle.

    Returns:
        ImageData whose splits yield (Tensor[1, 28, 28] float32, int64 label), classes
        ``"0"`` .. ``"9"``.
    """
    what = "mnist"
    check_val_fraction(what, val_fraction)  # before reading any file
    check_seed(what, seed)
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what}: path must be an existing folder, got {str(path)!r}")
    missing = [n for n in MNIST_FILES.values() if find_mnist_file(folder, n) is None]
    if missing:
        raise FileNotFoundError(
            f"{what}: {folder} lacks {', '.join(missing)} (plain or .gz); nothing is "
            "downloaded, put the MNIST IDX files there"
        )
    images, labels = _split(folder, "train")
    test_images, test_labels = _split(folder, "test")
    if images.shape[1:] != test_images.shape[1:]:
        raise ValueError(
            f"{what}: training and test images must share a size, got "
            f"{tuple(images.shape[2:])} and {tuple(test_images.shape[2:])}"
        )
    classes = [str(i) for i in range(_NUM_CLASSES)]
    return carve_val(what, images, labels, test_images, test_labels, classes, val_fraction, seed)
