"""One entry point for the CLI: a dataset from a name or a folder, its kind detected."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .cifar import CIFAR10_FILES, cifar10
from .dataset import ImageData
from .digits import digits
from .folder import class_folders, image_folder
from .mnist import MNIST_FILES, find_mnist_file, mnist

__all__ = ["detect", "load"]

_KINDS = (
    "'digits', or a folder holding class sub-folders of images, MNIST IDX files "
    f"({', '.join(MNIST_FILES.values())}, plain or .gz) or CIFAR-10 python batches "
    "(data_batch_1..5, test_batch, batches.meta)"
)


def detect(path: Path) -> str | None:
    """The kind of dataset in folder ``path``: ``"mnist"`` or ``"cifar10"`` when any of
    their files is there (so a partial copy gets an error naming the missing files),
    ``"image_folder"`` when it has sub-folders, else None."""
    if any(find_mnist_file(path, name) for name in MNIST_FILES.values()):
        return "mnist"
    if any((path / name).is_file() for name in CIFAR10_FILES[:-1]):
        return "cifar10"
    if class_folders(path):
        return "image_folder"
    return None


_LOADERS = {"mnist": mnist, "cifar10": cifar10, "image_folder": image_folder}


def load(spec: str | os.PathLike, **kwargs: Any) -> ImageData:
    """The dataset ``spec`` names: ``"digits"`` (:func:`~fastcnn.data.digits`) or a folder,
    loaded by :func:`~fastcnn.data.mnist`, :func:`~fastcnn.data.cifar10` or
    :func:`~fastcnn.data.image_folder` as its files say.

    Args:
        spec: ``"digits"`` or the path of a folder (``"digits"`` always means the built-in
            dataset; write ``./digits`` for a folder of that name).
        kwargs: passed to the loader (e.g. ``size=`` for digits and image folders,
            ``val_fraction=`` for MNIST and CIFAR-10, ``seed=`` for all).
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"load: spec must be a str or a path, got {type(spec).__name__}")
    if isinstance(spec, str) and spec == "digits":
        return digits(**kwargs)
    path = Path(spec)
    if not path.is_dir():
        reason = "it is a file, not a folder" if path.exists() else "no such folder"
        raise ValueError(f"load: spec must be {_KINDS}; got {str(spec)!r} ({reason})")
    kind = detect(path)
    if kind is None:
        raise ValueError(f"load: spec must be {_KINDS}; {str(spec)!r} holds none of these")
    return _LOADERS[kind](path, **kwargs)
