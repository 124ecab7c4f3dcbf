"""A ResNet-18-style network."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import nn as fnn
from ..data.normalize import Normalize
from ._blocks import check_sizes, conv_bn_relu, head


class BasicBlock(torch.nn.Module):
    """Two 3x3 conv-bn layers with a shortcut (a strided 1x1 conv-bn when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(cin, cout, 3, stride)
        self.conv2 = torch.nn.Sequential(
            fnn.Conv2d(cout, cout, 3, padding=1, bias=False), torch.nn.BatchNorm2d(cout)
        )
        self.shortcut = torch.nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = torch.nn.Sequential(
                fnn.Conv2d(cin, cout, 1, stride=stride, bias=False), torch.nn.BatchNorm2d(cout)
            )
        self.relu = fnn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet18(torch.nn.Module):
    """Normalize -> stem -> four stages of two basic blocks -> GAP -> linear.

    Args:
        num_classes: outputs of the classifier.
        in_channels: channels of the input images.
        width: channels of the first stage (64 in ResNet-18); stages double it.
        small_input: for 32x32 images, a 3x3 stride-1 stem without max pooling instead of the
            7x7 stride-2 stem and 3x3 max pool meant for 224x224 images.

    Input Tensor[N, in_channels, H, W]; output logits Tensor[N, num_classes].
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        width: int = 64,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        check_sizes("ResNet18", num_classes=num_classes, in_channels=in_channels, width=width)
        self.normalize = Normalize(in_channels)
        if small_input:
            self.stem = conv_bn_relu(in_channels, width, 3, 1)
        else:
            self.stem = torch.nn.Sequential(
                conv_bn_relu(in_channels, width, 7, 2), fnn.MaxPool2d(3, stride=2, padding=1)
            )
        blocks, channels = [], width
        for stage in range(4):
            cout = width * 2**stage
            for i in range(2):
                blocks.append(BasicBlock(channels, cout, 2 if stage > 0 and i == 0 else 1))
                channels = cout
        self.layers = torch.nn.Sequential(*blocks)
        self.head = head(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.layers(self.stem(self.normalize(x))))
