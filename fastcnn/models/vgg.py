"""A VGG-style network for 32x32 color images (CIFAR-10)."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import nn as fnn
from ..data.normalize import Normalize
from ._blocks import check_sizes, conv_bn_relu, head

# Channels per convolution, in units of `width`; "M" is a 2x2 max pool.
_LAYOUT = (1, 1, "M", 2, 2, "M", 4, 4, "M", 8, 8)


class VGGNet(torch.nn.Module):
    """Normalize -> VGG stages (conv-bn-relu pairs, 2x2 max pools) -> GAP -> linear.

    Args:
        num_classes: outputs of the classifier.
        in_channels: channels of the input images.
        width: channels of the first stage (64 is the classic VGG width); stages double it.

    Input Tensor[N, in_channels, H, W] (32x32 for CIFAR); output logits Tensor[N, num_classes].
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        check_sizes("VGGNet", num_classes=num_classes, in_channels=in_channels, width=width)
        self.normalize = Normalize(in_channels)
        layers: list[torch.nn.Module] = []
        channels = in_channels
        for item in _LAYOUT:
            if item == "M":
                layers.append(fnn.MaxPool2d(2))
            else:
                layers.append(conv_bn_relu(channels, item * width))
                channels = item * width
        self.features = torch.nn.Sequential(*layers)
        self.head = head(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(self.normalize(x)))
