"""The handwritten digits scikit-learn ships: a real dataset that needs no download."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._checks import is_int
from .dataset import ImageData
from .split import split_data

__all__ = ["digits"]

_NATIVE = 8  # the images are 8x8
_MAX = 16.0  # with values 0..16


def _load_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
            "digits: needs scikit-learn, which is not installed; "
            "`pip install scikit-learn` (or `pip install fastcnn[viz]`)"
        ) from e
    return load_digits()


def digits(
    size: int = 32,
    *,
    split: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> ImageData:
    """scikit-learn's 1,797 handwritten digits (8x8, 10 classes ``"0"`` .. ``"9"``).

    Values 0..16 are scaled to [0, 1] and the images resized to ``size`` x ``size`` by
    bilinear interpolation (``align_corners=False``; antialiased when shrinking). The split
    is stratified by class and depends only on ``seed``.

    Args:
        size: the side of the square images, >= 1 (8 keeps them as they are).
        split: fractions (train, val, test), each >= 0, summing to 1; 0 drops a split.
        seed: the seed of the shuffle.

    Returns:
        ImageData whose splits yield (Tensor[1, size, size] float32, int64 label).
    """
    what = "digits"
    if not is_int(size) or size < 1:
        raise ValueError(f"{what}: size must be an int >= 1, got {size!r}")
    size = int(size)
    bunch = _load_digits()
    images = torch.from_numpy(bunch.images / _MAX).to(torch.float32).unsqueeze(1)
    if size != _NATIVE:
        images = F.interpolate(
            images,
            size=(size, size),
            mode="bilinear",
            align_corners=False,
            antialias=size < _NATIVE,
        ).clamp_(0, 1)
    labels = torch.from_numpy(bunch.target).to(torch.int64)
    classes = [str(i) for i in range(10)]
    return split_data(what, images, labels, classes, split, seed)
