"""Drawing attribution maps over their images, in the manner of Captum's
``visualize_image_attr``: the map is summed over channels, scaled so that the top
``outlier_perc`` percent of its mass saturates, and drawn as a heat map, over a grayscale
copy of the image, or as a mask on the image."""

from __future__ import annotations

import torch
from torch import Tensor

from ._attribution import reduce_channels
from ._plot import figure, show, to_image

__all__ = ["normalize_attribution", "plot_attribution"]

_METHODS = ("heat_map", "overlay", "masked_image")
_SIGNS = ("absolute_value", "positive", "negative", "all")
_CMAPS = {"absolute_value": "Blues", "positive": "Greens", "negative": "Reds", "all": "bwr"}


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"plot_attribution: {name} must be one of {allowed}, got {value!r}")
    return value


def _saturation(values: Tensor, percentile: float) -> float:
    """The value below which ``percentile`` percent of the (non-negative) ``values``' total
    lies, as Captum's ``_cumulative_sum_threshold``."""
    ordered = values.flatten().double().sort().values
    sums = ordered.cumsum(0)
    index = int(torch.searchsorted(sums, sums[-1] * percentile / 100))
    return float(ordered[min(index, len(ordered) - 1)])


def normalize_attribution(attribution: Tensor, sign: str, outlier_perc: float = 2.0) -> Tensor:
    """A map Tensor[H, W] kept to ``sign`` (``"absolute_value"``, ``"positive"``,
    ``"negative"`` or ``"all"``) and divided by its saturation value (the top
    ``outlier_perc`` percent of its mass maps to 1), clipped to [-1, 1]: Tensor[H, W]."""
    _choice("sign", sign, _SIGNS)
    a = attribution.detach().float().cpu()
    if sign == "absolute_value":
        a = a.abs()
    elif sign == "positive":
        a = a.clamp(min=0)
    elif sign == "negative":
        a = a.clamp(max=0)
    scale = _saturation(a.abs(), 100 - outlier_perc)
    if scale <= 0:
        return torch.zeros_like(a)
    return (a / scale).clamp(-1, 1)


def _as_map(attribution: Tensor, reduce: str) -> Tensor:
    if not isinstance(attribution, Tensor) or attribution.dim() not in (2, 3):
        shape = tuple(attribution.shape) if isinstance(attribution, Tensor) else attribution
        raise ValueError(
            f"plot_attribution: attribution must be Tensor[C, H, W] or [H, W], got {shape}"
        )
    return attribution if attribution.dim() == 2 else reduce_channels(attribution, reduce)


def plot_attribution(
    image: Tensor,
    attribution: Tensor,
    *,
    method: str = "heat_map",
    sign: str = "absolute_value",
    ax=None,
    title: str | None = None,
    reduce: str = "sum",
    outlier_perc: float = 2.0,
    alpha: float = 0.5,
    cmap: str | None = None,
    colorbar: bool = False,
):
    """Draws an attribution map for one image.

    Args:
        image: Tensor[C, H, W] (C = 1 or 3) or Tensor[H, W], any range (scaled for display).
        attribution: Tensor[C, H, W] (reduced over channels, see ``reduce``) or Tensor[H, W]
            (e.g. a Grad-CAM map), at the image's resolution.
        method: ``"heat_map"`` (the map alone), ``"overlay"`` (over a grayscale copy of the
            image) or ``"masked_image"`` (the image times the map; not with ``sign="all"``).
        sign: which values to show: ``"absolute_value"``, ``"positive"``, ``"negative"`` or
            ``"all"`` (diverging colours, negative blue and positive red).
        ax: a matplotlib Axes to draw into; by default a new Figure.
        title: the axes' title.
        reduce: ``"sum"`` over channels (as Captum) or ``"max"`` of the absolute values (the
            usual saliency map).
        outlier_perc: the top percentage of the map's mass that saturates the colours.
        alpha: opacity of the map in ``"overlay"``.
        cmap: a matplotlib colour map for the heat map and overlay (by default, as Captum:
            ``"Blues"`` for absolute values, ``"Greens"`` positive, ``"Reds"`` negative and
            ``"bwr"`` for all).
        colorbar: add a colour bar (heat map and overlay).

    Returns:
        The matplotlib Figure.
    """
    _choice("method", method, _METHODS)
    _choice("sign", sign, _SIGNS)
    if method == "masked_image" and sign == "all":
        raise ValueError("plot_attribution: method='masked_image' needs a sign other than 'all'")
    heat = normalize_attribution(_as_map(attribution, reduce), sign, outlier_perc)
    if tuple(heat.shape) != tuple(image.shape[-2:]):
        raise ValueError(
            f"plot_attribution: attribution size {tuple(heat.shape)} differs from the image "
            f"size {tuple(image.shape[-2:])}"
        )
    fig, ax = figure(ax)
    limits = (-1, 1) if sign == "all" else ((-1, 0) if sign == "negative" else (0, 1))
    mappable = None
    if method == "masked_image":
        picture = to_image(image)
        mask = heat.abs().numpy()
        ax.imshow(picture * (mask[..., None] if picture.ndim == 3 else mask), cmap="gray")
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        if method == "overlay":
            show(ax, image.mean(0) if image.dim() == 3 else image)
        mappable = ax.imshow(
            heat.numpy(),
            cmap=cmap or _CMAPS[sign],
            vmin=limits[0],
            vmax=limits[1],
            alpha=alpha if method == "overlay" else None,
        )
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar and mappable is not None:
        fig.colorbar(mappable, ax=ax, shrink=0.8)
    return fig
