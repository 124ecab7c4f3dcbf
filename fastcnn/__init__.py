"""fastcnn: fast CPU (AVX-512/AVX2) and CUDA kernels for CNN layers, as PyTorch custom ops
and drop-in :mod:`torch.nn` layers."""

from __future__ import annotations

from . import data, models, nn, ops, train
from ._info import info

__version__ = "0.1.0"

__all__ = ["__version__", "data", "info", "models", "nn", "ops", "train"]
