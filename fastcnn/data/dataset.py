"""The container every loader returns: train/val/test splits plus class names."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from .normalize import Normalize

__all__ = ["ImageData"]


@dataclass(repr=False)
class ImageData:
    """An image classification dataset split into train, val and test.

    Each split yields ``(image, label)``: image Tensor[C, H, W] float32 in [0, 1], label an
    int64 scalar tensor in [0, num_classes). The loaders of :mod:`fastcnn.data` build the
    splits as in-memory :class:`~torch.utils.data.TensorDataset` s, so they work with any
    sampler (``DistributedSampler`` included); any map-style dataset is accepted here.

    Attributes:
        train: the training split (never None).
        val: the validation split, or None when there is none.
        test: the test split, or None when there is none.
        classes: class names; label ``i`` is ``classes[i]``.
    """

    train: Dataset
    val: Dataset | None
    test: Dataset | None
    classes: list[str]

    def __post_init__(self) -> None:
        if self.train is None:
            raise ValueError("ImageData: train must be a Dataset, got None")
        if not self.classes or not all(isinstance(c, str) for c in self.classes):
            raise ValueError(
                f"ImageData: classes must be a non-empty list of str, got {self.classes!r}"
            )
        self.classes = list(self.classes)

    def _first_image(self) -> Tensor:
        if isinstance(self.train, TensorDataset):
            return self.train.tensors[0][0]
        return self.train[0][0]

    @property
    def in_channels(self) -> int:
        """C, the number of channels of every image."""
        return int(self._first_image().shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W), the size of every image."""
        _, h, w = self._first_image().shape
        return int(h), int(w)

    @property
    def num_classes(self) -> int:
        """The number of classes, ``len(classes)``."""
        return len(self.classes)

    def train_images(self) -> Tensor:
        """All training images as Tensor[N, C, H, W] float32 (a view when the split is a
        TensorDataset, else stacked)."""
        if isinstance(self.train, TensorDataset):
            return self.train.tensors[0]
        return torch.stack([self.train[i][0] for i in range(len(self.train))])

    def normalization(self) -> Normalize:
        """A :class:`Normalize` fitted to the training images (per-channel mean and std)."""
        return Normalize(self.in_channels).fit_(self.train_images())

    def __repr__(self) -> str:
        sizes = ", ".join(
            f"{name}={'None' if split is None else len(split)}"
            for name, split in (("train", self.train), ("val", self.val), ("test", self.test))
        )
        return (
            f"ImageData({sizes}, classes={self.num_classes}, in_channels={self.in_channels}, "
            f"image_size={self.image_size})"
        )
