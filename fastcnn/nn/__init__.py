"""Drop-in :mod:`torch.nn` layers on fastcnn's kernels, and :func:`convert`."""

from .convert import convert
from .modules import Conv2d, GlobalAvgPool2d, GuidedReLU, MaxPool2d, ReLU

__all__ = ["Conv2d", "GlobalAvgPool2d", "GuidedReLU", "MaxPool2d", "ReLU", "convert"]
