"""Per-channel input normalization that travels with the model (its statistics are buffers,
so they are in the state_dict and in every checkpoint)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["Normalize"]


class Normalize(torch.nn.Module):
    """``(x - mean[c]) / std[c]`` for each channel c of Tensor[N, C, H, W].

    Statistics start as mean 0, std 1 (the identity) and are set from training images with
    :meth:`fit_`; ``fitted`` records whether that happened.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"Normalize: channels must be an int >= 1, got {channels!r}")
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit_(self, images: Tensor, eps: float = 1e-6) -> Normalize:
        """Sets mean and std per channel from Tensor[N, C, H, W] (in place); returns self."""
        if images.dim() != 4 or images.shape[1] != self.mean.numel():
            raise ValueError(
                f"Normalize.fit_: images must be [N, {self.mean.numel()}, H, W], "
                f"got shape {tuple(images.shape)}"
            )
        # Sums in float64, a chunk of images at a time: no full-size copy of large datasets.
        sums = torch.zeros(images.shape[1], dtype=torch.float64)
        squares = torch.zeros_like(sums)
        for chunk in images.detach().split(1024):
            chunk = chunk.double()
            sums += chunk.sum(dim=(0, 2, 3))
            squares += chunk.square().sum(dim=(0, 2, 3))
        n = images.numel() // images.shape[1]
        mean = sums / n
        var = (squares - n * mean.square()) / max(n - 1, 1)
        self.mean.copy_(mean)
        self.std.copy_(var.clamp(min=0).sqrt().clamp(min=eps))
        self.fitted.fill_(True)
        return self

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"channels={self.mean.numel()}, fitted={bool(self.fitted)}"
