"""Neural style transfer (Gatys, Ecker and Bethge, 2016): an image whose activations match
those of a content image at some layers and whose Gram matrices (feature correlations) match
those of a style image at others, found by optimizing its pixels."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .dream import (
    Layer,
    check_image,
    check_number,
    check_range,
    forward_to,
    frozen,
    progress_bar,
    resize,
    resolve_layers,
)

__all__ = ["gram_matrix", "style_transfer"]

log = logging.getLogger("fastcnn.viz")

_OPTIMIZERS = ("lbfgs", "adam")
_INITS = ("content", "noise")
_DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}


def gram_matrix(features: Tensor) -> Tensor:
    """Feature correlations of Tensor[N, C, H, W] (or any [N, C, ...]): Tensor[N, C, C] with
    ``G[n, i, j] = sum_k F[n, i, k] F[n, j, k] / (C * H * W)``, F the features flattened to
    [N, C, H * W]. The normalization makes it comparable across image sizes."""
    flat = features.reshape(features.shape[0], features.shape[1], -1)
    return flat @ flat.transpose(1, 2) / flat[0].numel()


def total_variation(x: Tensor) -> Tensor:
    """Mean squared difference between vertically and horizontally adjacent pixels of
    Tensor[N, C, H, W] (the sum of the two means), a scalar."""
    dy = x[..., 1:, :] - x[..., :-1, :]
    dx = x[..., :, 1:] - x[..., :, :-1]
    return dy.square().mean() + dx.square().mean()


@dataclass
class _Problem:
    """What one pyramid level optimizes: the layers, the targets and the weights."""

    model: torch.nn.Module
    content_layers: list[str]
    style_layers: list[str]
    content_targets: dict[str, Tensor]  # name -> Tensor[N, ...]
    style_targets: dict[str, Tensor]  # name -> Gram Tensor[N or 1, C, C]
    weights: dict[str, float]  # "content", "style", "tv"

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(self.content_layers + self.style_layers))

    def losses(self, x: Tensor) -> dict[str, Tensor]:
        """Scalar losses of Tensor[N, C, H, W]: ``content``, ``style``, ``tv`` (unweighted)
        and ``total`` (their weighted sum)."""
        found = forward_to(self.model, x, self.layers, "style_transfer")
        content = _mean(
            (found[n] - self.content_targets[n]).square().mean() for n in self.content_layers
        )
        style = _mean(
            (gram_matrix(found[n]) - self.style_targets[n]).square().mean()
            for n in self.style_layers
        )
        terms = {"content": content, "style": style, "tv": total_variation(x)}
        terms["total"] = sum(self.weights[k] * v for k, v in terms.items())
        return terms


def _mean(values) -> Tensor:
    values = list(values)
    return sum(values) / len(values)


def _problem(
    model: torch.nn.Module,
    content: Tensor,
    style: Tensor,
    content_layers: list[str],
    style_layers: list[str],
    weights: dict[str, float],
) -> _Problem:
    """The targets for Tensor[N, C, H, W] content and Tensor[1 or N, C, H', W'] style."""
    with torch.no_grad():
        on_content = forward_to(model, content, content_layers, "style_transfer")
        on_style = forward_to(model, style, style_layers, "style_transfer")
    grams = {name: gram_matrix(found) for name, found in on_style.items()}
    return _Problem(model, content_layers, style_layers, on_content, grams, weights)


def _optimizer(name: str, x: Tensor, lr: float) -> torch.optim.Optimizer:
    if name == "lbfgs":
        # One evaluation per step(), the curvature history persisting across calls; no
        # tolerances: the number of steps is the caller's.
        return torch.optim.LBFGS(
            [x], lr=lr, max_iter=1, history_size=20, tolerance_grad=0.0, tolerance_change=0.0
        )
    return torch.optim.Adam([x], lr=lr)


def _floats(losses: dict[str, Tensor], scale: float) -> dict[str, float]:
    return {"scale": scale, **{name: value.item() for name, value in losses.items()}}


def _block_outward(x: Tensor, value_range: tuple[float, float]) -> None:
    """Zeroes ``x.grad`` where a descent step would push a pixel at a bound past it, so that
    the optimizer's directions (L-BFGS's curvature pairs above all) agree with the clamping."""
    low, high = value_range
    x.grad.masked_fill_(((x <= low) & (x.grad > 0)) | ((x >= high) & (x.grad < 0)), 0.0)


def _optimize(
    problem: _Problem,
    x: Tensor,
    *,
    scale: float,
    optimizer: str,
    lr: float,
    steps: int,
    value_range: tuple[float, float],
    record: list[dict[str, float]],
    bar,
) -> Tensor:
    """Runs ``steps`` steps on a copy of Tensor[N, C, H, W] ``x``, clamping it to
    ``value_range`` after each; appends ``steps + 1`` entries to ``record`` (the losses
    before the first step and after each, tagged with the pyramid level ``scale``) and
    advances ``bar``. Returns the result, detached.

    The optimizer sees the total loss divided by its first value, which makes L-BFGS (whose
    thresholds are absolute) behave the same whatever the scale of the model's activations."""
    x = x.detach().clone().requires_grad_(True)
    opt = _optimizer(optimizer, x, lr)
    evaluations: list[dict[str, float]] = []  # of one step: L-BFGS may make several
    unit = None  # the first total loss

    def closure() -> Tensor:
        nonlocal unit
        losses = problem.losses(x)
        evaluations.append(_floats(losses, scale))
        unit = unit or evaluations[0]["total"] or 1.0
        objective = losses["total"] / unit
        (x.grad,) = torch.autograd.grad(objective, x)
        _block_outward(x, value_range)
        return objective.detach()

    for _ in range(steps):
        evaluations.clear()
        opt.step(closure)
        with torch.no_grad():
            x.clamp_(*value_range)
        record.append(evaluations[0])  # the first evaluation is of the image before the step
        bar.update()
        bar.set_postfix(loss=f"{record[-1]['total']:.4g}", refresh=False)
    with torch.no_grad():
        record.append(_floats(problem.losses(x), scale))
    return x.detach()


def _check_pyramid(pyramid: Sequence[float] | None) -> list[float]:
    if pyramid is None:
        return [1.0]
    scales = list(pyramid) if isinstance(pyramid, Sequence) else None
    if (
        not scales
        or any(isinstance(s, bool) or not isinstance(s, (int, float)) for s in scales)
        or any(not 0 < s <= 1 for s in scales)
        or any(a >= b for a, b in zip(scales, scales[1:]))
        or scales[-1] != 1
    ):
        raise ValueError(
            "style_transfer: pyramid must be None or increasing scales in (0, 1] ending with "
            f"1.0 (e.g. [0.25, 0.5, 1.0]), got {pyramid!r}"
        )
    return [float(s) for s in scales]


def _check_choice(value: object, choices: Sequence[str], where: str) -> None:
    if value not in choices:
        raise ValueError(f"{where} must be one of {list(choices)}, got {value!r}")


def _scaled_size(x: Tensor, scale: float) -> tuple[int, int]:
    return tuple(max(1, round(side * scale)) for side in x.shape[-2:])


def _start(content: Tensor, init: str, seed: int, value_range: tuple[float, float]) -> Tensor:
    """The image to start from: the content image, or uniform noise in ``value_range``."""
    if init == "content":
        return content.clamp(*value_range)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(content.shape, generator=generator, dtype=content.dtype)
    low, high = value_range
    return (low + (high - low) * noise).to(content.device)


def style_transfer(
    model: torch.nn.Module,
    content: Tensor,
    style: Tensor,
    *,
    content_layers: Layer | Sequence[Layer],
    style_layers: Layer | Sequence[Layer],
    content_weight: float = 1.0,
    style_weight: float = 1e3,
    tv_weight: float = 1.0,
    steps: int = 100,
    optimizer: str = "adam",
    lr: float | None = None,
    pyramid: Sequence[float] | None = None,
    init: str = "content",
    value_range: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    progress: bool = False,
    return_losses: bool = False,
) -> Tensor | tuple[Tensor, list[dict[str, float]]]:
    """Neural style transfer (Gatys et al., 2016): optimizes the pixels of an image so that
    it has the content of ``content`` and the style of ``style`` as ``model`` sees them.

    The loss is ``content_weight * content + style_weight * style + tv_weight * tv``:

    - content: mean squared difference between the image's activations and the content
      image's at ``content_layers`` (averaged over the layers);
    - style: mean squared difference between the Gram matrices (:func:`gram_matrix`,
      normalized by C * H * W) of the image's activations and the style image's at
      ``style_layers`` (averaged over the layers);
    - tv: :func:`total_variation` of the image, which discourages high-frequency noise.

    The best balance depends on the model and on the style image (on a trained
    :class:`fastcnn.models.DigitsNet`, ``style_weight`` 1e3 suits a high-contrast texture, 1e5
    a soft photograph): raise ``style_weight`` for more style, ``tv_weight`` for smoother
    images. The pixels are optimized by Adam (the default,
    the steadiest under clamping) or L-BFGS (one function evaluation per step, no line
    search), and clamped to ``value_range`` after every step (a gradient that would push a
    pixel at a bound past it is dropped). Both see the total loss divided by its value on
    the starting image, so ``lr`` does not depend on the scale of the loss.

    With ``pyramid`` (e.g. ``[0.25, 0.5, 1.0]``) the content and style images are scaled by
    each factor in turn and ``steps`` steps are run at each size, the result being upsampled
    to start the next.

    Any CNN works: a fastcnn model, or one built from ``torch.nn`` (such as a VGG); the
    layers' outputs are recorded with forward hooks, and the forward pass stops after the last
    of them. A layer called more than once per forward pass contributes its first call's
    output. The model sees images as given (the fastcnn reference models take [0, 1] images
    and normalize them inside), and is left as found: it runs in eval mode, its parameters get
    no gradient and no hook stays behind.

    Args:
        model: the CNN whose activations define content and style.
        content: Tensor[C, H, W] or [N, C, H, W], on the model's device, in ``value_range``.
        style: Tensor[C, H', W'] or [1 or N, C, H', W'], any size; one style image serves
            every content image.
        content_layers: modules or dotted names (e.g. ``["features.5"]``); one or a sequence.
        style_layers: modules or dotted names (e.g. ``["features.0", "features.1",
            "features.3"]``); one or a sequence.
        content_weight, style_weight, tv_weight: weights (>= 0) of the three terms.
        steps: optimizer steps per pyramid level.
        optimizer: ``"lbfgs"`` or ``"adam"``.
        lr: learning rate; ``None`` picks 1.0 for L-BFGS, 0.02 for Adam.
        pyramid: ``None`` (the full size only) or increasing scales in (0, 1] ending with 1.0.
        init: start from ``"content"`` or from uniform ``"noise"`` (drawn with ``seed``).
        value_range: ``(low, high)`` the pixels are clamped to.
        seed: the seed of the noise for ``init="noise"``.
        progress: show a tqdm progress bar.
        return_losses: also return the loss history.

    Returns:
        The image, Tensor shaped like ``content`` (same dtype and device), detached, in
        ``value_range``. With ``return_losses=True``, ``(image, history)``: ``history`` is a
        list of dicts with float values ``total``, ``content``, ``style``, ``tv`` (unweighted
        terms; ``total`` weighted) and ``scale`` (the pyramid level); each level adds
        ``steps + 1`` entries: the losses of its starting image and after each step.
    """
    images = (
        check_image(content, "style_transfer: content"),
        check_image(style, "style_transfer: style"),
    )
    weights = {"content": content_weight, "style": style_weight, "tv": tv_weight}
    lr, scales, value_range = _check_args(
        images, weights, steps, optimizer, init, lr, pyramid, value_range
    )
    layers = (
        resolve_layers(model, content_layers, "style_transfer: content_layers"),
        resolve_layers(model, style_layers, "style_transfer: style_layers"),
    )
    history: list[dict[str, float]] = []
    x = None
    with frozen(model), progress_bar(len(scales) * steps, "style transfer", progress) as bar:
        for scale in scales:
            content_s, style_s = (resize(im, _scaled_size(im, scale)) for im in images)
            problem = _problem(model, content_s, style_s, *layers, weights)
            size = tuple(content_s.shape[-2:])
            x = _start(content_s, init, seed, value_range) if x is None else resize(x, size)
            x = _optimize(
                problem,
                x,
                scale=scale,
                optimizer=optimizer,
                lr=lr,
                steps=steps,
                value_range=value_range,
                record=history,
                bar=bar,
            )
            log.debug("style_transfer: scale %g done, loss %.4g", scale, history[-1]["total"])
    result = x.reshape(content.shape).to(content.dtype)
    return (result, history) if return_losses else result


def _check_args(
    images: tuple[Tensor, Tensor],
    weights: dict[str, float],
    steps: int,
    optimizer: str,
    init: str,
    lr: float | None,
    pyramid: Sequence[float] | None,
    value_range: tuple[float, float],
) -> tuple[float, list[float], tuple[float, float]]:
    """Checks :func:`style_transfer`'s arguments; returns the learning rate, the pyramid's
    scales and the value range to use."""
    content, style = images
    if style.shape[1] != content.shape[1] or style.shape[0] not in (1, content.shape[0]):
        raise ValueError(
            "style_transfer: style must have the content's channels and 1 or N images, got "
            f"style {tuple(style.shape)} for content {tuple(content.shape)}"
        )
    for name, value in weights.items():
        check_number(value, f"style_transfer: {name}_weight", low=0.0)
    check_number(steps, "style_transfer: steps", low=1, integer=True)
    _check_choice(optimizer, _OPTIMIZERS, "style_transfer: optimizer")
    _check_choice(init, _INITS, "style_transfer: init")
    lr = _DEFAULT_LR[optimizer] if lr is None else lr
    check_number(lr, "style_transfer: lr", low=0.0)
    return lr, _check_pyramid(pyramid), check_range(value_range, "style_transfer: value_range")
