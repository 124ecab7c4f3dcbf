"""Building blocks shared by the reference networks, made of fastcnn.nn layers."""

from __future__ import annotations

import torch

from .. import nn as fnn


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> torch.nn.Sequential:
    return torch.nn.Sequential(
        fnn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        torch.nn.BatchNorm2d(cout),
        fnn.ReLU(),
    )


def head(channels: int, num_classes: int) -> torch.nn.Sequential:
    """Global average pooling, then a linear classifier: Tensor[N, C, H, W] -> [N, classes]."""
    return torch.nn.Sequential(fnn.GlobalAvgPool2d(), torch.nn.Linear(channels, num_classes))


def check_sizes(name: str, **sizes: int) -> None:
    for arg, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: {arg} must be an int >= 1, got {value!r}")
