"""Reference networks built from fastcnn.nn layers, each starting with a
:class:`fastcnn.data.Normalize` and ending with global average pooling and a linear layer."""

from __future__ import annotations

import torch

from .digits import DigitsNet
from .resnet import ResNet18
from .vgg import VGGNet

__all__ = ["DigitsNet", "ResNet18", "VGGNet", "build", "names"]

_MODELS = {"digits": DigitsNet, "vgg": VGGNet, "resnet18": ResNet18}


def names() -> list[str]:
    """The names :func:`build` accepts."""
    return sorted(_MODELS)


def build(name: str, **kwargs) -> torch.nn.Module:
    """A reference network by name (``"digits"``, ``"vgg"``, ``"resnet18"``) with its keyword
    arguments (``num_classes``, ``in_channels``, ``width``, ...)."""
    if name not in _MODELS:
        raise ValueError(f"models.build: name must be one of {names()}, got {name!r}")
    return _MODELS[name](**kwargs)
