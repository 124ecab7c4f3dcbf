"""Datasets from a folder with one sub-folder of images per class."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ._checks import check_seed, check_size
from .dataset import ImageData
from .split import check_split, split_data

__all__ = ["IMAGE_EXTENSIONS", "class_folders", "image_folder"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def _pillow():
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError(
            "image_folder: needs Pillow to read images, which is not installed; "
            "`pip install pillow`"
        ) from e
    return Image


def _visible(name: str) -> bool:
    return not name.startswith(".")


def class_folders(path: Path) -> list[Path]:
    """The visible sub-folders of ``path``, sorted by name."""
    folders = (p for p in path.iterdir() if p.is_dir() and _visible(p.name))
    return sorted(folders, key=lambda p: p.name)


def _image_files(folder: Path) -> list[Path]:
    """Image files (by extension) anywhere under ``folder``, sorted; others are skipped."""
    files, skipped = [], 0
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or not all(map(_visible, p.relative_to(folder).parts)):
            continue
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(p)
        else:
            skipped += 1
    if skipped:
        logger.info("image_folder: skipped %d non-image file(s) in %s", skipped, folder)
    return files


def _read(Image, file: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """One image as uint8 [H, W, C]."""
    try:
        with Image.open(file) as im:
            im = im.convert(mode)
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            pixels = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:  # PIL.UnidentifiedImageError is an OSError
        raise ValueError(f"image_folder: cannot read image {file}: {e}") from e
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def image_folder(
    path: str | os.PathLike,
    *,
    size: int | tuple[int, int] | None = None,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    grayscale: bool = False,
) -> ImageData:
    """A dataset from ``path/<class>/<image>`` files (the layout of torchvision's
    ``ImageFolder``), read eagerly into memory with Pillow.

    Classes are the visible sub-folders, sorted by name. Files whose extension is not one
    of :data:`IMAGE_EXTENSIONS` are skipped, as are hidden files and folders.

    Args:
        path: the folder holding one sub-folder per class (at least two).
        size: resize every image (bilinear) to this int (square) or (height, width); when
            None all images must already share a size.
        split: fractions (train, val, test), each >= 0, summing to 1; 0 drops a split.
        seed: the seed of the shuffle.
        grayscale: read images as one channel (Pillow mode ``L``) instead of RGB.

    Returns:
        ImageData whose splits yield (Tensor[C, H, W] float32, int64 label), C = 1 or 3.
    """
    what = "image_folder"
    hw = None if size is None else check_size(what, size)
    check_split(what, split)  # before reading any image
    check_seed(what, seed)
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{what}: path must be an existing folder, got {str(path)!r}")
    folders = class_folders(root)
    if len(folders) < 2:
        raise ValueError(
            f"{what}: {root} must hold at least 2 class sub-folders, got {len(folders)}"
            + (f" ({folders[0].name!r})" if folders else "")
        )
    Image = _pillow()
    mode = "L" if grayscale else "RGB"
    pixels: list[np.ndarray] = []
    labels: list[int] = []
    first: Path | None = None
    for label, folder in enumerate(folders):
        files = _image_files(folder)
        if not files:
            raise ValueError(
                f"{what}: class folder {folder} holds no images (expected files ending in "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        for file in files:
            image = _read(Image, file, mode, hw)
            if first is None:
                first = file
            elif image.shape != pixels[0].shape:
                h, w = pixels[0].shape[:2]
                raise ValueError(
                    f"{what}: all images must share a size when size is not given; {file} is "
                    f"{image.shape[0]}x{image.shape[1]} (HxW) but {first} is {h}x{w}; "
                    "pass size=... to resize them"
                )
            pixels.append(image)
            labels.append(label)
    images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2)
    classes = [f.name for f in folders]
    return split_data(what, images, torch.tensor(labels), classes, split, seed)
