"""Datasets from images and labels already in memory: torch tensors or NumPy arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ._checks import check_classes, check_labels
from .dataset import ImageData
from .split import split_data

__all__ = ["from_arrays", "from_tensors"]

_SPLIT = (0.8, 0.1, 0.1)


def _check_images(what: str, images: object) -> Tensor:
    """Tensor[N, C, H, W] or Tensor[N, H, W] (one channel), uint8 or floating point in
    [0, 1], as Tensor[N, C, H, W] of the same dtype."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{what}: images must be a Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(
            f"{what}: images must be uint8 (0..255) or floating point (0..1), got {images.dtype}"
        )
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4:
        raise ValueError(
            f"{what}: images must be 4-D [N, C, H, W] or 3-D [N, H, W], "
            f"got shape {tuple(images.shape)}"
        )
    if images.is_floating_point() and images.numel():
        low, high = float(images.min()), float(images.max())
        if not (low >= 0 and high <= 1):  # also catches NaN
            raise ValueError(
                f"{what}: floating-point images must be in [0, 1], got values in "
                f"[{low:g}, {high:g}]; scale them first (uint8 images are scaled by 1/255)"
            )
    return images.cpu()


def _from_tensors(
    what: str,
    images: object,
    labels: object,
    classes: Sequence[str] | None,
    split: Sequence[float],
    seed: int,
) -> ImageData:
    images = _check_images(what, images)
    if not isinstance(labels, Tensor):
        raise TypeError(f"{what}: labels must be a Tensor, got {type(labels).__name__}")
    labels = labels.cpu()
    if classes is None:
        top = int(labels.max()) if labels.numel() and labels.dim() == 1 else 0
        names = [str(i) for i in range(max(top, 0) + 1)]
    else:
        names = check_classes(what, classes)
    labels = check_labels(what, labels, images.shape[0], len(names), "labels")
    return split_data(what, images, labels, names, split, seed)


def from_tensors(
    images: Tensor,
    labels: Tensor,
    *,
    classes: Sequence[str] | None = None,
    split: Sequence[float] = _SPLIT,
    seed: int = 0,
) -> ImageData:
    """A dataset from tensors, split by class (see :func:`fastcnn.data.split.stratified_split`).

    Args:
        images: Tensor[N, C, H, W] or Tensor[N, H, W] (one channel); uint8 (scaled by 1/255)
            or floating point in [0, 1].
        labels: integer Tensor[N] in [0, num_classes).
        classes: class names; by default ``"0"``, ``"1"``, ... up to the largest label.
        split: fractions (train, val, test), each >= 0, summing to 1; 0 drops a split.
        seed: the seed of the shuffle; the same seed gives the same split everywhere.

    Returns:
        ImageData whose splits yield (Tensor[C, H, W] float32, int64 label).
    """
    return _from_tensors("from_tensors", images, labels, classes, split, seed)


def _nchw(images: np.ndarray) -> np.ndarray:
    """NHWC (last dim 1 or 3 and the second not) to NCHW; anything else as it is."""
    if images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        return images.transpose(0, 3, 1, 2)
    return images


def from_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    classes: Sequence[str] | None = None,
    split: Sequence[float] = _SPLIT,
    seed: int = 0,
) -> ImageData:
    """A dataset from NumPy arrays; see :func:`from_tensors` for the other arguments.

    Args:
        images: [N, C, H, W], [N, H, W, C] (detected when the last dim is 1 or 3 and the
            second is not) or [N, H, W]; uint8 (0..255) or floating point in [0, 1].
        labels: integer array [N] (or anything :func:`numpy.asarray` makes one of).
    """
    what = "from_arrays"
    if not isinstance(images, np.ndarray):
        raise TypeError(f"{what}: images must be a numpy.ndarray, got {type(images).__name__}")
    if images.dtype != np.uint8 and images.dtype.kind != "f":
        raise TypeError(
            f"{what}: images must be uint8 (0..255) or floating point (0..1), got {images.dtype}"
        )
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{what}: labels must be an integer array, got {labels.dtype}")
    if images.dtype.kind == "f":
        images = images.astype(np.float32, copy=False)
    images = np.ascontiguousarray(_nchw(images))
    if not images.flags.writeable:
        images = images.copy()
    labels = torch.from_numpy(labels.astype(np.int64))
    return _from_tensors(what, torch.from_numpy(images), labels, classes, split, seed)
