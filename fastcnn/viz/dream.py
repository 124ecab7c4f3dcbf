"""Deep Dream: gradient ascent on the activation of a layer (or one of its channels), starting
from an image, over a pyramid of octaves, with random jitter and normalized gradients.

Also the helpers that the generative techniques share (see :mod:`fastcnn.viz.style`): running a
model frozen in eval mode, recording layers up to the last one needed, resizing and checking
images.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ._layers import evaluating, recording, resolve

__all__ = ["deep_dream"]

log = logging.getLogger("fastcnn.viz")

Layer = Union[torch.nn.Module, str]  # a module of the model, or its dotted name


class _Stop(Exception):
    """Raised by a forward hook once every wanted layer has produced its output."""


@contextmanager
def frozen(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Within the block, ``model`` is in eval mode and its parameters do not require grad (so
    backward passes compute gradients for the input only and accumulate nothing). Each
    module's training flag and each parameter's ``requires_grad`` are restored on exit."""
    wants_grad = [(p, p.requires_grad) for p in model.parameters()]
    try:
        with evaluating(model):
            for p, _ in wants_grad:
                p.requires_grad_(False)
            yield model
    finally:
        for p, flag in wants_grad:
            p.requires_grad_(flag)


def resolve_layers(
    model: torch.nn.Module, layers: Layer | Sequence[Layer], where: str
) -> list[str]:
    """Dotted names of ``layers`` (modules or names; one or a sequence), in order, without
    repeats. Raises ``ValueError`` naming ``where`` (e.g. ``"style_transfer: style_layers"``)
    for an empty sequence or a layer that is not in the model."""
    if isinstance(layers, (str, torch.nn.Module)):
        layers = [layers]
    elif not isinstance(layers, Sequence):
        raise TypeError(
            f"{where} must be a module, a dotted name or a sequence of them, "
            f"got {type(layers).__name__}"
        )
    if len(layers) == 0:
        raise ValueError(f"{where} must name at least one layer, got an empty sequence")
    names = []
    for layer in layers:
        try:
            name, _ = resolve(model, layer)
        except ValueError as error:
            raise ValueError(f"{where}: {str(error).removeprefix('layer: ')}") from None
        if name not in names:
            names.append(name)
    return names


def forward_to(model: torch.nn.Module, x: Tensor, layers: Sequence[str], where: str) -> dict:
    """``{name: Tensor}``: the first output of each named layer when ``model`` runs on ``x``.
    The forward pass stops as soon as every layer has produced one (later layers are not
    computed). Raises ``RuntimeError`` for a layer that the forward pass never calls."""
    with recording(model, layers) as outputs:
        handles = []

        def stop_when_done(*_) -> None:
            if all(outputs.values()):
                raise _Stop

        try:
            for name in layers:
                handles.append(resolve(model, name)[1].register_forward_hook(stop_when_done))
            model(x)
        except _Stop:
            pass
        finally:
            for handle in handles:
                handle.remove()
    missing = [name for name, found in outputs.items() if not found]
    if missing:
        raise RuntimeError(f"{where}: layers {missing} are never called by the model's forward")
    for name, found in outputs.items():
        if not isinstance(found[0], Tensor):
            raise TypeError(
                f"{where}: layer {name!r} must output a Tensor, got {type(found[0]).__name__}"
            )
    return {name: found[0] for name, found in outputs.items()}


def check_image(image: object, where: str) -> Tensor:
    """``image`` as Tensor[N, C, H, W] (a Tensor[C, H, W] gets N = 1); raises for other input."""
    if not isinstance(image, Tensor):
        raise TypeError(f"{where} must be a Tensor, got {type(image).__name__}")
    if image.dim() not in (3, 4) or image.numel() == 0:
        raise ValueError(
            f"{where} must be a non-empty Tensor[C, H, W] or [N, C, H, W], "
            f"got shape {tuple(image.shape)}"
        )
    if not image.is_floating_point():
        raise TypeError(f"{where} must be a floating-point Tensor, got {image.dtype}")
    return image.detach() if image.dim() == 4 else image.detach().unsqueeze(0)


def check_number(value: object, where: str, *, low: float, integer: bool = False) -> None:
    """Raises ``ValueError`` unless ``value`` is a number (an int when ``integer``) >= ``low``."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value >= low:
        kind = "an int" if integer else "a number"
        raise ValueError(f"{where} must be {kind} >= {low}, got {value!r}")


def check_range(value_range: object, where: str) -> tuple[float, float]:
    """``value_range`` as ``(low, high)`` floats; raises ``ValueError`` unless low < high."""
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        low = high = 0.0
    if not low < high:
        raise ValueError(f"{where} must be (low, high) with low < high, got {value_range!r}")
    return low, high


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Tensor[N, C, H, W] resized bilinearly (antialiased) to ``size`` = (h, w); ``x`` itself
    when it already has that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def progress_bar(total: int, desc: str, enabled: bool):
    """A ``tqdm.auto`` bar over ``total`` steps, silent unless ``enabled``."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def _octave_sizes(size: tuple[int, int], octaves: int, scale: float) -> list[tuple[int, int]]:
    """Image sizes of the pyramid, smallest first, the last being ``size``."""
    return [
        tuple(max(1, round(side / scale**k)) for side in size) for k in reversed(range(octaves))
    ]


def _objective(activation: Tensor, channel: int | None) -> Tensor:
    """Mean of Tensor[N, C, ...] (or of its channel ``channel``), a scalar to ascend."""
    if channel is None:
        return activation.mean()
    channels = activation.shape[1] if activation.dim() > 1 else 0
    if not 0 <= channel < channels:
        raise ValueError(
            f"deep_dream: channel must be in [0, {channels}) for the layer's output of shape "
            f"{tuple(activation.shape)}, got {channel}"
        )
    return activation[:, channel].mean()


def _ascent_step(
    model: torch.nn.Module,
    x: Tensor,
    layer: str,
    channel: int | None,
    shift: tuple[int, int],
    lr: float,
) -> tuple[Tensor, float]:
    """One step: ``x`` (Tensor[N, C, H, W]) rolled by ``shift``, the gradient of the objective
    rolled back, scaled to a mean absolute value of 1 per image, times ``lr`` added. Returns
    the new (unclamped) image and the objective's value."""
    rolled = torch.roll(x, shifts=shift, dims=(-2, -1)).requires_grad_(True)
    objective = _objective(forward_to(model, rolled, [layer], "deep_dream")[layer], channel)
    (grad,) = torch.autograd.grad(objective, rolled)
    grad = torch.roll(grad, shifts=(-shift[0], -shift[1]), dims=(-2, -1))
    scale = grad.abs().mean(dim=(1, 2, 3), keepdim=True).clamp(min=1e-12)
    return x + lr * grad / scale, objective.item()


def _check_args(channel, octaves, octave_scale, steps, lr, jitter) -> None:
    """Checks :func:`deep_dream`'s numeric arguments."""
    if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int)):
        raise TypeError(f"deep_dream: channel must be an int or None, got {channel!r}")
    check_number(octaves, "deep_dream: octaves", low=1, integer=True)
    check_number(octave_scale, "deep_dream: octave_scale", low=1.0)
    check_number(steps, "deep_dream: steps", low=0, integer=True)
    check_number(lr, "deep_dream: lr", low=0.0)
    check_number(jitter, "deep_dream: jitter", low=0, integer=True)


def deep_dream(
    model: torch.nn.Module,
    image: Tensor,
    layer: Layer,
    *,
    channel: int | None = None,
    octaves: int = 4,
    octave_scale: float = 1.4,
    steps: int = 20,
    lr: float = 0.02,
    jitter: int = 8,
    value_range: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    progress: bool = False,
) -> Tensor:
    """Deep Dream (Mordvintsev et al., 2015): changes ``image`` by gradient ascent so that
    ``layer`` responds more strongly: its mean activation, or that of its channel ``channel``.

    The image is processed over a pyramid of ``octaves`` sizes, each ``octave_scale`` times the
    previous, from the smallest to the full size; the detail added at one octave is upsampled
    and carried into the next. Each step rolls the image by a random shift of up to ``jitter``
    pixels in each direction, takes the gradient of the objective with respect to the pixels,
    divides it by its mean absolute value (per image) and adds ``lr`` times it, then clamps the
    image to ``value_range``.

    The model sees the image as given: pass it the way the model expects its input. The
    fastcnn reference models (:mod:`fastcnn.models`) take images in [0, 1] and normalize them
    inside (their ``normalize`` module), which is what the default ``value_range`` is for.

    The model is left as it was found: it runs in eval mode (each module's training flag is
    restored afterwards), gradients are taken with respect to the image only (no parameter's
    ``.grad`` changes) and no hook stays behind. The result depends only on the arguments and
    ``seed`` (which draws the shifts).

    Args:
        model: a CNN; ``layer`` is one of its modules.
        image: Tensor[C, H, W] or [N, C, H, W], on the model's device, in ``value_range``.
        layer: the module whose output is raised, or its dotted name in
            ``model.named_modules()`` (e.g. ``"features.3"``). The forward pass stops there.
        channel: raise only this channel of the layer's output (Tensor[N, C, ...]); ``None``
            raises the whole layer.
        octaves: number of pyramid levels (1 = the full size only).
        octave_scale: size ratio between successive octaves (>= 1).
        steps: gradient-ascent steps per octave.
        lr: step size: each step changes a pixel by ``lr`` on average (before clamping), in
            the units of the image.
        jitter: maximum random shift in pixels per step (0 = none).
        value_range: ``(low, high)`` to which pixels are clamped after every step.
        seed: seed of the random shifts.
        progress: show a tqdm progress bar.

    Returns:
        Tensor shaped like ``image`` (same dtype and device), detached.
    """
    x = check_image(image, "deep_dream: image")
    _check_args(channel, octaves, octave_scale, steps, lr, jitter)
    low, high = check_range(value_range, "deep_dream: value_range")
    name = resolve_layers(model, layer, "deep_dream: layer")[0]
    generator = torch.Generator().manual_seed(seed)
    sizes = _octave_sizes(tuple(x.shape[-2:]), octaves, octave_scale)
    detail = torch.zeros_like(resize(x, sizes[0]))
    value = float("nan")
    with frozen(model), progress_bar(octaves * steps, "deep dream", progress) as bar:
        for size in sizes:
            base = resize(x, size)
            dream = (base + resize(detail, size)).clamp(low, high)
            for _ in range(steps):
                shift = tuple(
                    torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
                )
                dream, value = _ascent_step(model, dream, name, channel, shift, lr)
                dream = dream.clamp(low, high)
                bar.update()
                bar.set_postfix(objective=f"{value:.4g}", refresh=False)
            log.debug("deep_dream: octave %s done, objective %.4g", size, value)
            detail = dream - base
    return dream.reshape(image.shape).to(image.dtype)
