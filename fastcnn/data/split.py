"""The one split helper every loader uses: a seeded, stratified train/val/test split.

Within each class (in label order) the images are shuffled by one
:class:`numpy.random.RandomState` seeded with ``seed`` and cut in proportion to the
fractions. ``RandomState`` streams are frozen by NumPy's compatibility policy (NEP 19), so a
split is identical across runs, machines and library versions. Each split keeps the
original order of its images.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from ._checks import check_seed, to_float
from .dataset import ImageData

__all__ = ["carve_val", "check_split", "check_val_fraction", "split_data", "stratified_split"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_TOLERANCE = 1e-6


def _is_number(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)


def check_split(what: str, split: object) -> tuple[float, float, float]:
    """Three fractions (train, val, test), each >= 0, summing to 1 (within 1e-6), with
    train > 0; a 0 drops that split."""
    expected = "3 fractions (train, val, test), each >= 0, summing to 1, with train > 0"
    if isinstance(split, np.ndarray):
        split = split.tolist()
    if (
        isinstance(split, str)
        or not isinstance(split, Sequence)
        or len(split) != 3
        or not all(map(_is_number, split))
    ):
        raise ValueError(f"{what}: split must be {expected}, got {split!r}")
    fractions = tuple(float(f) for f in split)
    total = sum(fractions)
    if min(fractions) < 0 or fractions[0] <= 0 or abs(total - 1) > _TOLERANCE:
        raise ValueError(f"{what}: split must be {expected}, got {split!r} (sum {total:.6g})")
    return fractions


def check_val_fraction(what: str, val_fraction: object) -> float:
    """A fraction of the training set to hold out for validation, in [0, 1)."""
    if not _is_number(val_fraction) or not 0 <= val_fraction < 1:
        raise ValueError(f"{what}: val_fraction must be a number in [0, 1), got {val_fraction!r}")
    return float(val_fraction)


def _class_counts(n: int, fractions: np.ndarray) -> np.ndarray:
    """How many of n images of one class go to each split: proportional, then at least one
    in every split with a positive fraction (taken from the largest; needs n >= that many)."""
    bounds = np.minimum(np.rint(np.cumsum(fractions) * n).astype(np.int64), n)
    bounds[-1] = n
    counts = np.diff(bounds, prepend=0)
    for k in np.flatnonzero((fractions > 0) & (counts == 0)):
        donor = int(np.argmax(counts))
        counts[donor] -= 1
        counts[k] += 1
    return counts


def stratified_split(
    what: str,
    labels: Tensor,
    fractions: Sequence[float],
    classes: Sequence[str],
    seed: int,
    *,
    arg: str = "split",
    names: Sequence[str] = SPLITS,
) -> list[Tensor]:
    """Splits the indices of ``labels`` (int64 Tensor[N] in [0, len(classes))) by class.

    Every split with a positive fraction gets every class present, in proportion; a split
    with fraction 0 gets nothing. ``arg`` and ``names`` are how messages call the fractions
    and the splits.

    Returns:
        one sorted int64 Tensor of indices into ``labels`` per fraction; together they
        partition ``range(N)``.
    """
    seed = check_seed(what, seed)
    frac = np.asarray(fractions, dtype=np.float64)
    y = labels.numpy()
    n = len(y)
    if n == 0:
        raise ValueError(f"{what}: there are no images to split")
    present = np.unique(y)
    missing = sorted(set(range(len(classes))) - set(present.tolist()))
    if missing:
        logger.warning("%s: no images of classes %s", what, [classes[c] for c in missing])
    for k in np.flatnonzero(frac > 0):
        size = round(float(frac[k]) * n)
        if size < len(present):
            raise ValueError(
                f"{what}: {arg} makes the {names[k]} split {frac[k]:g} of {n} images = {size}, "
                f"too small to hold one image of each of the {len(present)} classes; raise its "
                "fraction or add images (a fraction of 0 drops a val or test split)"
            )
    nonempty = [names[k] for k in np.flatnonzero(frac > 0)]
    needed = len(nonempty)
    rng = np.random.RandomState(seed)
    parts: list[list[np.ndarray]] = [[] for _ in frac]
    for c in present:
        idx = np.flatnonzero(y == c)
        if len(idx) < needed:
            raise ValueError(
                f"{what}: class {classes[c]!r} has {len(idx)} image(s), too few to put one in "
                f"each of the {needed} splits that {arg} makes ({', '.join(nonempty)}); add "
                "images or drop a split (a val or test fraction of 0)"
            )
        idx = idx[rng.permutation(len(idx))]
        for part, chunk in zip(parts, np.split(idx, np.cumsum(_class_counts(len(idx), frac)))):
            part.append(chunk)
    return [torch.from_numpy(np.sort(np.concatenate(part))) for part in parts]


def _subset(images: Tensor, labels: Tensor, idx: Tensor) -> TensorDataset:
    return TensorDataset(to_float(images[idx]), labels[idx])


def _log(what: str, data: ImageData) -> ImageData:
    logger.info("%s: %r", what, data)
    return data


def split_data(
    what: str,
    images: Tensor,
    labels: Tensor,
    classes: list[str],
    split: object,
    seed: int,
) -> ImageData:
    """ImageData from all images, split by :func:`stratified_split`.

    Args:
        what: the loader's name, for messages.
        images: Tensor[N, C, H, W], uint8 (scaled by 1/255) or float in [0, 1].
        labels: int64 Tensor[N] in [0, len(classes)).
        classes: class names.
        split: fractions (train, val, test), checked by :func:`check_split`.
        seed: the seed of the shuffle.
    """
    fractions = check_split(what, split)
    parts = stratified_split(what, labels, fractions, classes, seed)
    train, val, test = (
        _subset(images, labels, idx) if f > 0 else None for f, idx in zip(fractions, parts)
    )
    return _log(what, ImageData(train, val, test, classes))


def carve_val(
    what: str,
    images: Tensor,
    labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    classes: list[str],
    val_fraction: object,
    seed: int,
) -> ImageData:
    """ImageData with an official test set and a val split carved from the training set
    by :func:`stratified_split` (no val split when ``val_fraction`` is 0).

    Args:
        what: the loader's name, for messages.
        images, test_images: Tensor[N, C, H, W] and Tensor[M, C, H, W], uint8 or float in
            [0, 1].
        labels, test_labels: int64 Tensor[N] and Tensor[M] in [0, len(classes)).
        classes: class names.
        val_fraction: the fraction of the training set to hold out, in [0, 1).
        seed: the seed of the shuffle.
    """
    vf = check_val_fraction(what, val_fraction)
    train_idx, val_idx = stratified_split(
        what, labels, (1 - vf, vf), classes, seed, arg="val_fraction", names=SPLITS[:2]
    )
    train = _subset(images, labels, train_idx)
    val = _subset(images, labels, val_idx) if vf > 0 else None
    test = TensorDataset(to_float(test_images), test_labels)
    return _log(what, ImageData(train, val, test, classes))
