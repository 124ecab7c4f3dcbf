"""Drop-in layers: subclasses of the torch.nn modules with the same constructors, attributes
and state_dict keys, whose forward runs fastcnn's ops."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import ops

__all__ = ["Conv2d", "GlobalAvgPool2d", "GuidedReLU", "MaxPool2d", "ReLU"]


class Conv2d(torch.nn.Conv2d):
    """:class:`torch.nn.Conv2d` on fastcnn's kernels: Tensor[N, C, H, W] (or unbatched
    Tensor[C, H, W]) -> Tensor[N, K, Ho, Wo], with weight Tensor[K, C/groups, R, S] and bias
    Tensor[K]. Non-zero padding modes pad explicitly first, exactly as torch does, then
    convolve without padding."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.padding_mode != "zeros":
            padded = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return ops.conv2d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)
        return ops.conv2d(
            input, weight, bias, self.stride, self.padding, self.dilation, self.groups
        )


class MaxPool2d(torch.nn.MaxPool2d):
    """:class:`torch.nn.MaxPool2d` on fastcnn's kernel: Tensor[N, C, H, W] (or unbatched
    Tensor[C, H, W]) -> Tensor[N, C, Ho, Wo]; with ``return_indices=True`` also the int64
    indices Tensor[N, C, Ho, Wo] of the maxima (flat ``h * W + w``, as torch)."""

    def forward(self, input: Tensor):
        return ops.max_pool2d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )


class ReLU(torch.nn.ReLU):
    """:class:`torch.nn.ReLU` on fastcnn's kernel: Tensor[*] -> Tensor[*] of the same shape.
    ``inplace=True`` is accepted for compatibility, but the result is always a new tensor:
    the input is left unchanged."""

    def forward(self, input: Tensor) -> Tensor:
        return ops.relu(input)


class GuidedReLU(torch.nn.ReLU):
    """ReLU whose backward passes only positive gradients where the input was positive
    (guided backpropagation); its forward equals :class:`ReLU`: Tensor[*] -> Tensor[*]."""

    def forward(self, input: Tensor) -> Tensor:
        return ops.guided_relu(input)


class GlobalAvgPool2d(torch.nn.Module):
    """Mean over H x W: Tensor[N, C, H, W] -> Tensor[N, C] (or [N, C, 1, 1] with keepdim)."""

    def __init__(self, keepdim: bool = False) -> None:
        super().__init__()
        self.keepdim = keepdim

    def forward(self, input: Tensor) -> Tensor:
        return ops.global_avg_pool2d(input, keepdim=self.keepdim)

    def extra_repr(self) -> str:
        return f"keepdim={self.keepdim}"
