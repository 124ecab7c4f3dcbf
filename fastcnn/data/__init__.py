"""Image classification datasets for training: small, in memory, split reproducibly.

Every loader returns an :class:`ImageData` whose train/val/test splits yield
``(Tensor[C, H, W] float32 in [0, 1], int64 label)``; :meth:`ImageData.normalization` gives
the :class:`Normalize` layer fitted to the training images.

- :func:`digits`: scikit-learn's handwritten digits (no download).
- :func:`image_folder`: one sub-folder of images per class.
- :func:`mnist`, :func:`cifar10`: the official files, from a local folder.
- :func:`from_tensors`, :func:`from_arrays`: images and labels already in memory.
- :func:`load`: any of these from ``"digits"`` or a folder (what the CLI uses).
"""

from __future__ import annotations

from .arrays import from_arrays, from_tensors
from .cifar import cifar10
from .dataset import ImageData
from .digits import digits
from .folder import image_folder
from .load import load
from .mnist import mnist
from .normalize import Normalize

__all__ = [
    "ImageData",
    "Normalize",
    "cifar10",
    "digits",
    "from_arrays",
    "from_tensors",
    "image_folder",
    "load",
    "mnist",
]
