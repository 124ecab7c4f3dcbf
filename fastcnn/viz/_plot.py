"""Plotting primitives shared by the visualizations: matplotlib's object-oriented API only,
never pyplot, so the library opens no window and keeps no global figure state."""

from __future__ import annotations

import math

import numpy as np
import torch


def figure(ax=None, nrows: int = 1, ncols: int = 1, size: float = 3.0):
    """``(fig, axes)``: a new Figure with an ``nrows x ncols`` grid of Axes (a 2-D array), or
    ``ax``'s figure and ``ax`` itself when given."""
    if ax is not None:
        return ax.figure, np.array(ax).reshape(nrows, ncols) if nrows * ncols > 1 else ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size * ncols, size * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes if nrows * ncols > 1 else axes[0, 0]


def to_image(t: torch.Tensor) -> np.ndarray:
    """Tensor[C, H, W] (C = 1 or 3) or [H, W] to an array for ``imshow``, min-max scaled to
    [0, 1] per image: [H, W] for one channel, [H, W, 3] for three."""
    t = t.detach().float().cpu()
    if t.dim() == 3:
        t = t[0] if t.shape[0] == 1 else t.permute(1, 2, 0)
    low, high = t.min(), t.max()
    t = (t - low) / (high - low) if high > low else torch.zeros_like(t)
    return t.numpy()


def show(ax, t: torch.Tensor, title: str | None = None, cmap: str = "gray") -> None:
    """Draws one image (see :func:`to_image`) without ticks."""
    ax.imshow(to_image(t), cmap=cmap if t.dim() == 2 or t.shape[0] == 1 else None)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def grid(
    images: torch.Tensor,
    titles=None,
    ncols: int | None = None,
    cmap: str = "gray",
    size: float = 1.2,
    ax=None,
):
    """A grid of Tensor[N, C, H, W] (or [N, H, W]) images, each scaled on its own.

    Returns:
        The matplotlib Figure.
    """
    n = images.shape[0]
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    if ax is not None:
        fig = ax.figure
        spec = ax.get_subplotspec().subgridspec(nrows, ncols)
        ax.remove()
        axes = [fig.add_subplot(spec[i // ncols, i % ncols]) for i in range(nrows * ncols)]
    else:
        fig, axes = figure(None, nrows, ncols, size)
        axes = list(np.array(axes).ravel())
    for i, a in enumerate(axes):
        if i < n:
            show(a, images[i], titles[i] if titles else None, cmap)
        else:
            a.axis("off")
    return fig


def overlay(
    ax,
    image: torch.Tensor,
    heat: torch.Tensor,
    title: str | None = None,
    cmap: str = "jet",
    alpha: float = 0.5,
) -> None:
    """A heat map Tensor[H, W] drawn translucently over Tensor[C, H, W]."""
    show(ax, image, title)
    ax.imshow(to_image(heat), cmap=cmap, alpha=alpha)
