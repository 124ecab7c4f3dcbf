"""A small network for the 32x32 handwritten digits."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import nn as fnn
from ..data.normalize import Normalize
from ._blocks import check_sizes, conv_bn_relu, head


class DigitsNet(torch.nn.Module):
    """Normalize, conv-bn-relu x2, pool, conv-bn-relu, pool, conv-bn-relu, GAP, linear.

    Args:
        num_classes: outputs of the classifier.
        in_channels: channels of the input images.
        width: channels of the first convolution; later ones use 2x and 4x.

    Input Tensor[N, in_channels, H, W] (32x32 for the digits); output logits Tensor[N, num_classes].
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        check_sizes("DigitsNet", num_classes=num_classes, in_channels=in_channels, width=width)
        self.normalize = Normalize(in_channels)
        self.features = torch.nn.Sequential(
            conv_bn_relu(in_channels, width),
            conv_bn_relu(width, width),
            fnn.MaxPool2d(2),
            conv_bn_relu(width, 2 * width),
            fnn.MaxPool2d(2),
            conv_bn_relu(2 * width, 4 * width),
        )
        self.head = head(4 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(self.normalize(x)))
