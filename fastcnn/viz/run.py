"""Any visualization technique by name on one image: what ``fastcnn viz`` runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import _plot

TECHNIQUES = (
    "filters",
    "feature-maps",
    "saliency",
    "guided-backprop",
    "grad-cam",
    "guided-grad-cam",
    "occlusion",
    "deep-dream",
    "style-transfer",
)


def read_image(path: str | Path, channels: int, size: tuple[int, int] | None) -> torch.Tensor:
    """An image file as Tensor[1, channels, H, W] in [0, 1], resized to ``size`` (H, W)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        if size is not None:
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        t = torch.from_numpy(np.array(im)).float() / 255
    return (t[None] if t.dim() == 2 else t.permute(2, 0, 1))[None]


def convs(model: torch.nn.Module) -> list[str]:
    """The dotted names of the model's Conv2d layers, in order: the default layers."""
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    if not names:
        raise ValueError("viz: the model has no Conv2d layer; pass --layer")
    return names


def run(
    technique: str,
    model: torch.nn.Module,
    image: torch.Tensor,
    *,
    layer: str | None = None,
    target: int | None = None,
    channel: int | None = None,
    neuron=None,
    window: int = 4,
    stride: int = 2,
    style: torch.Tensor | None = None,
    classes=None,
):
    """Runs ``technique`` on ``image`` (Tensor[1, C, H, W]) and returns the matplotlib Figure."""
    from .. import viz

    if technique not in TECHNIQUES:
        raise ValueError(f"viz: technique must be one of {TECHNIQUES}, got {technique!r}")
    model.eval()
    if technique == "filters":
        return viz.plot_filters(model, layer)
    if technique == "feature-maps":
        return viz.plot_feature_maps(model, image[0], layer or convs(model)[0])
    if technique == "deep-dream":
        out = viz.deep_dream(model, image, layer or convs(model)[-1], channel=channel)
        return _plot.grid(torch.cat([image, out]), ["input", "Deep Dream"], ncols=2, size=3)
    if technique == "style-transfer":
        if style is None:
            raise ValueError("viz: style-transfer needs --style IMAGE")
        names = convs(model)
        out = viz.style_transfer(
            model,
            image,
            style,
            content_layers=[layer or names[-1]],
            style_layers=names[: max(1, len(names) // 2)],
        )
        return _plot.grid(
            torch.cat([image, _fit(style, image), out]),
            ["content", "style", "result"],
            ncols=3,
            size=3,
        )
    with torch.no_grad():
        predicted = int(model(image).argmax(1))
    target = predicted if target is None else target
    if technique == "saliency":
        attribution = viz.saliency(model, image, target)
    elif technique == "guided-backprop":
        if layer is not None:
            attribution = viz.guided_backprop(
                model, image, layer=layer, neuron=neuron, channel=channel
            )
        else:
            attribution = viz.guided_backprop(model, image, target)
    elif technique == "grad-cam":
        attribution = viz.grad_cam(model, image, target, layer=layer or convs(model)[-1])
    elif technique == "guided-grad-cam":
        attribution = viz.guided_grad_cam(model, image, target, layer=layer or convs(model)[-1])
    else:
        attribution = viz.occlusion(model, image, target, window=window, stride=stride)
    name = classes[target] if classes else target
    return viz.plot_attribution(
        image[0],
        attribution[0],
        method="overlay",
        title=f"{technique}, class {name} (predicted "
        f"{classes[predicted] if classes else predicted})",
    )


def _fit(style: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.interpolate(
        style, size=like.shape[-2:], mode="bilinear", align_corners=False
    )
