"""The demo's visual report: every visualization technique run on the trained digits network,
one PNG each, and an index.html that shows them on one page with a line of explanation."""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from . import viz
from .viz import _plot

log = logging.getLogger("fastcnn.demo")

# DigitsNet's layers (see fastcnn.models.DigitsNet): the first convolution, and the last block.
FIRST_CONV, LAST_BLOCK = "features.0.0", "features.5"


@dataclass(frozen=True)
class Figure:
    file: str
    title: str
    explanation: str
    draw: Callable  # (Report) -> matplotlib Figure


class Report:
    """The trained model, a few test images, and the data every figure draws from."""

    def __init__(self, model: torch.nn.Module, data, count: int = 6) -> None:
        self.model = model.eval()
        self.data = data
        images, labels = data.test.tensors
        self.images, self.labels = images[:count], labels[:count]
        self.classes = data.classes

    def predictions(self) -> torch.Tensor:
        with torch.no_grad():
            return self.model(self.images).argmax(1)

    def attribution_figure(self, maps: torch.Tensor, name: str):
        """Each test image above its attribution map (the target is the predicted class)."""
        n = len(self.images)
        fig, axes = _plot.figure(None, 2, n, size=1.6)
        predicted = self.predictions()
        for i in range(n):
            _plot.show(axes[0, i], self.images[i], f"label {self.classes[self.labels[i]]}")
            heat = maps[i].abs().amax(0) if maps[i].dim() == 3 else maps[i]
            _plot.overlay(axes[1, i], self.images[i], heat, f"{name}: {self.classes[predicted[i]]}")
        return fig


def _filters(r: Report):
    return viz.plot_filters(r.model)


def _feature_maps(r: Report):
    return viz.plot_feature_maps(r.model, r.images[0], FIRST_CONV, max_maps=32)


def _activations(r: Report):
    layers = ["features.0", "features.3", LAST_BLOCK]
    acts = viz.activations(r.model, r.images[:1], layers)
    size = r.images.shape[-2:]  # deeper maps are smaller: shown at the input's size
    maps = torch.cat(
        [
            torch.nn.functional.interpolate(acts[name][:1, :8], size=size, mode="nearest")[
                0, :, None
            ]
            for name in layers
        ]
    )
    titles = [f"{name}[{c}]" for name in layers for c in range(8)]
    return _plot.grid(maps, titles, ncols=8, size=1.1)


def _test_features(r: Report) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = r.data.test.tensors
    return viz.features(r.model, images), labels


def _neighbors(r: Report):
    gallery_images = r.data.train.tensors[0]
    gallery = viz.features(r.model, gallery_images)
    queries = viz.features(r.model, r.images)
    dist, idx = viz.nearest_neighbors(queries, gallery, k=6, metric="l1")
    return viz.plot_neighbors(r.images, gallery_images, idx, dist=dist)


def _embedding(method: str):
    def draw(r: Report):
        feats, labels = _test_features(r)
        return viz.plot_embedding(viz.embed(feats, method), labels, classes=r.classes)

    return draw


def _attribution(name: str, compute: Callable):
    def draw(r: Report):
        return r.attribution_figure(compute(r, r.predictions()), name)

    return draw


def _guided_neuron(r: Report):
    acts = viz.activations(r.model, r.images[:1], [LAST_BLOCK])[LAST_BLOCK][0]
    c = int(acts.flatten(1).amax(1).argmax())
    y, x = divmod(int(acts[c].argmax()), acts.shape[-1])
    grads = viz.guided_backprop(r.model, r.images[:1], layer=LAST_BLOCK, neuron=(c, y, x))
    fig, axes = _plot.figure(None, 1, 2, size=2.5)
    _plot.show(axes[0, 0], r.images[0], "input")
    _plot.show(axes[0, 1], grads[0].abs().amax(0), f"{LAST_BLOCK} neuron ({c}, {y}, {x})")
    return fig


def _deep_dream(r: Report):
    rows = [("input", r.images[:3])]
    for title, layer, channel in (
        ("features.3", "features.3", None),
        ("features.5, channel 7", LAST_BLOCK, 7),
        ("class 3 logit", "head.1", 3),
    ):
        rows.append(
            (title, viz.deep_dream(r.model, r.images[:3], layer, channel=channel, steps=10))
        )
    images = torch.cat([torch.stack([row[1][i] for row in rows]) for i in range(3)])
    return _plot.grid(images, [row[0] for row in rows] * 3, ncols=len(rows), size=1.8)


def _style_transfer(r: Report):
    from sklearn.datasets import load_sample_image

    photo = torch.tensor(load_sample_image("flower.jpg"), dtype=torch.float32) / 255
    gray = photo.mean(-1)[None, None, 100:228, 200:328]  # a 128x128 crop of petals
    style = torch.nn.functional.interpolate(gray, size=32, mode="area")
    content = r.images[:3]
    result = viz.style_transfer(
        r.model,
        content,
        style,
        content_layers=[LAST_BLOCK],
        style_layers=["features.0", "features.1", "features.3"],
        style_weight=1e5,
        tv_weight=10,
        steps=150,
    )
    images = torch.cat([style, content, style, result])
    titles = ["style", "content", "content", "content", "style", "result", "result", "result"]
    return _plot.grid(images, titles, ncols=4, size=1.8)


FIGURES = [
    Figure(
        "filters.png",
        "First-layer filters",
        "The 3x3 weights of the first convolution: mostly small edge and blob detectors.",
        _filters,
    ),
    Figure(
        "feature_maps.png",
        "First-layer feature maps",
        "One digit through the first convolution: each map is one filter's response, "
        "highlighting edges of a given orientation (high-pass responses).",
        _feature_maps,
    ),
    Figure(
        "activations.png",
        "Layer activations",
        "Eight channels of three layers for the same digit, from local strokes (first "
        "block) to coarse, class-specific parts (last block).",
        _activations,
    ),
    Figure(
        "neighbors.png",
        "Nearest neighbours in feature space",
        "Test digits (left) and the training digits whose penultimate-layer features are "
        "closest in L1 distance: the network groups digits by class, not by pixels.",
        _neighbors,
    ),
    Figure(
        "embedding_pca.png",
        "PCA of the features",
        "The test set's penultimate-layer features projected on their two principal "
        "components, coloured by class.",
        _embedding("pca"),
    ),
    Figure(
        "embedding_tsne.png",
        "t-SNE of the features",
        "The same features embedded with t-SNE, which keeps neighbourhoods: ten clusters.",
        _embedding("tsne"),
    ),
    Figure(
        "occlusion.png",
        "Occlusion",
        "How much the predicted class's score drops when a 4x4 patch is greyed out at each "
        "place (same definition as Captum's Occlusion).",
        _attribution(
            "occlusion", lambda r, t: viz.occlusion(r.model, r.images, t, window=4, stride=2)
        ),
    ),
    Figure(
        "saliency.png",
        "Saliency",
        "The absolute gradient of the predicted class's score with respect to each pixel.",
        _attribution("saliency", lambda r, t: viz.saliency(r.model, r.images, t)),
    ),
    Figure(
        "guided_backprop.png",
        "Guided backpropagation",
        "Gradients passed back only where both the activation and the gradient are "
        "positive (fastcnn's guided-ReLU backward): sharper than plain saliency.",
        _attribution("guided", lambda r, t: viz.guided_backprop(r.model, r.images, t)),
    ),
    Figure(
        "guided_neuron.png",
        "Guided backpropagation of one neuron",
        "What in the input drives the most active neuron of the last convolutional block.",
        _guided_neuron,
    ),
    Figure(
        "grad_cam.png",
        "Grad-CAM",
        "The last block's channels weighted by their mean gradient for the predicted "
        "class: a coarse map of where the evidence is.",
        _attribution("Grad-CAM", lambda r, t: viz.grad_cam(r.model, r.images, t, layer=LAST_BLOCK)),
    ),
    Figure(
        "guided_grad_cam.png",
        "Guided Grad-CAM",
        "Guided backpropagation masked by Grad-CAM: fine detail, class-specific.",
        _attribution(
            "guided Grad-CAM",
            lambda r, t: viz.guided_grad_cam(r.model, r.images, t, layer=LAST_BLOCK),
        ),
    ),
    Figure(
        "deep_dream.png",
        "Deep Dream",
        "Gradient ascent on the last block's activation, over three octaves with jitter: "
        "the image is pushed towards the patterns that block responds to.",
        _deep_dream,
    ),
    Figure(
        "style_transfer.png",
        "Neural style transfer",
        "A digit redrawn with the texture statistics (Gram matrices of early layers) of a "
        "photo of petals, keeping the last block's content (Gatys et al.).",
        _style_transfer,
    ),
]


def write_report(
    model: torch.nn.Module, data, out: str | Path, *, curves: str | None = None
) -> Path:
    """Draws every figure into ``out`` and writes ``out/index.html``; returns its path.

    Args:
        model: a trained DigitsNet (layer names as in :class:`fastcnn.models.DigitsNet`).
        data: the fastcnn.data.ImageData it was trained on.
        curves: an already written training-curves PNG in ``out`` to show first.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = Report(model, data)
    entries = []
    if curves:
        entries.append(
            (
                curves,
                "Training curves",
                "Loss per step and per epoch (log scale) and accuracy per epoch, on the "
                "training and validation splits.",
            )
        )
    for fig in FIGURES:
        log.info("drawing %s", fig.file)
        fig.draw(report).savefig(out / fig.file, dpi=110)
        entries.append((fig.file, fig.title, fig.explanation))
    sections = "\n".join(
        f"<section><h2>{html.escape(title)}</h2><p>{html.escape(text)}</p>"
        f'<img src="{html.escape(file)}" alt="{html.escape(title)}"></section>'
        for file, title, text in entries
    )
    page = out / "index.html"
    page.write_text(
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>fastcnn demo</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "img{max-width:100%;border:1px solid #ddd}section{margin-bottom:2.5em}</style></head>"
        f"<body><h1>What the digits network learned</h1>\n{sections}\n</body></html>\n"
    )
    return page
