"""Plotting primitives shared by the visualizations: matplotlib's object-oriented API only,
never pyplot, so the library opens no window and keeps no global figure state."""

from __future__ import annotations

import math

import numpy as np
import torch


def figure(ax=None, nrows: int = 1, ncols: int = 1, size: float = 3.0):
    """``(fig, axes)``: a new Figure with an ``nrows x ncols`` grid of Axes (a 2-D array; one
    Axes for 1 x 1), or, when ``ax`` is given, its figure with ``ax`` itself for 1 x 1, ``ax``
    reshaped when it holds ``nrows x ncols`` Axes, or else a grid taking the place of ``ax``."""
    if ax is not None:
        if nrows * ncols == 1:
            return ax.figure, ax
        if np.size(ax) != nrows * ncols:
            ax = subplots(ax, nrows, ncols)[1]
        axes = np.array(ax, dtype=object).reshape(nrows, ncols)
        return axes[0, 0].figure, axes
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size * ncols, size * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes if nrows * ncols > 1 else axes[0, 0]


def subplots(
    ax=None,
    nrows: int = 1,
    ncols: int = 1,
    *,
    figsize: tuple[float, float] | None = None,
    width_ratios=None,
    projection: str | None = None,
):
    """``(fig, axes)``: an ``nrows x ncols`` grid of Axes as a flat list (row-major), in a new
    Figure of ``figsize`` inches, or taking the place of ``ax`` in its figure (``ax`` is
    removed) when given. ``width_ratios`` sizes the columns; ``projection="3d"`` makes 3-D Axes.
    """
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, layout="constrained")
        spec = fig.add_gridspec(nrows, ncols, width_ratios=width_ratios)
    else:
        fig, outer = ax.figure, ax.get_subplotspec()
        if outer is None:
            raise ValueError("ax: must be an Axes placed by a grid (e.g. Figure.subplots)")
        spec = outer.subgridspec(nrows, ncols, width_ratios=width_ratios)
        ax.remove()
    axes = [
        fig.add_subplot(spec[i, j], projection=projection)
        for i in range(nrows)
        for j in range(ncols)
    ]
    return fig, axes


def displayable(images: torch.Tensor) -> torch.Tensor:
    """Tensor[..., C, H, W] as images :func:`show` can draw: unchanged when C is 1 or 3, else
    the mean over channels (Tensor[..., 1, H, W])."""
    if images.shape[-3] in (1, 3):
        return images
    return images.float().mean(dim=-3, keepdim=True)


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
    """A grid of Tensor[N, C, H, W] (or [N, H, W]) images, each scaled on its own, in a new
    Figure or, with ``ax``, in the place of ``ax`` (see :func:`subplots`).

    Returns:
        The matplotlib Figure.
    """
    n = images.shape[0]
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    fig, axes = subplots(ax, nrows, ncols, figsize=(size * ncols, size * nrows))
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
