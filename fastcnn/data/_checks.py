"""Argument checks and conversions shared by every loader, written once.

Every message names the loader and the argument, says what was expected and what came:
``from_tensors: labels must be 1-D [N], got shape (4, 2)``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def is_int(value: object) -> bool:
    """An integer (Python or NumPy) and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_seed(what: str, seed: object) -> int:
    """A seed for :class:`numpy.random.RandomState`: an int in [0, 2**32)."""
    if not is_int(seed) or not 0 <= seed < 2**32:
        raise ValueError(f"{what}: seed must be an int in [0, 2**32), got {seed!r}")
    return int(seed)


def check_size(what: str, size: object) -> tuple[int, int]:
    """An image size: an int (square) or a pair (height, width) of ints >= 1."""
    if is_int(size):
        pair = (int(size), int(size))
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(map(is_int, size)):
        pair = (int(size[0]), int(size[1]))
    else:
        raise TypeError(f"{what}: size must be an int or a pair (height, width), got {size!r}")
    if min(pair) < 1:
        raise ValueError(f"{what}: size must be >= 1, got {size!r}")
    return pair


def check_classes(what: str, classes: object) -> list[str]:
    """Class names: a non-empty sequence of distinct strings."""
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise TypeError(f"{what}: classes must be a sequence of str, got {type(classes).__name__}")
    names = list(classes)
    bad = [c for c in names if not isinstance(c, str)]
    if bad:
        raise TypeError(f"{what}: classes must be a sequence of str, got an item {bad[0]!r}")
    if not names:
        raise ValueError(f"{what}: classes must name at least one class, got []")
    if len(set(names)) != len(names):
        dupes = sorted({c for c in names if names.count(c) > 1})
        raise ValueError(f"{what}: classes must be distinct, got repeated names {dupes}")
    return names


def check_labels(what: str, labels: Tensor, count: int, num_classes: int, name: str) -> Tensor:
    """``labels`` is an integer Tensor[count] with values in [0, num_classes); returns it
    as int64. ``name`` is how messages call it (an argument or a file)."""
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"{what}: {name} must be an integer tensor, got {labels.dtype}")
    if labels.dim() != 1:
        raise ValueError(f"{what}: {name} must be 1-D [N], got shape {tuple(labels.shape)}")
    if labels.numel() != count:
        raise ValueError(
            f"{what}: {name} must hold one label per image ({count}), got {labels.numel()}"
        )
    if labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"{what}: {name} must be in [0, {num_classes}) (one per class), "
                f"got values in [{low}, {high}]"
            )
    return labels.to(torch.int64)


def to_float(images: Tensor) -> Tensor:
    """Tensor[N, C, H, W] uint8 (scaled by 1/255) or floating point as contiguous float32."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255).contiguous()
    return images.to(torch.float32).contiguous()
