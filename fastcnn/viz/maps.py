"""What a layer sees and computes: first-layer filters, one image's feature maps, and any set
of layers' activations for a batch.

The compute functions run the model in eval mode without gradients and give every module its
own training flag back afterwards; they leave no hook behind, even when the forward raises.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Union

import torch
from torch import Tensor

from . import _plot
from ._layers import evaluating, resolve

__all__ = ["activations", "feature_maps", "filters", "plot_feature_maps", "plot_filters"]

Layer = Union[torch.nn.Module, str]


# ----------------------------------------------------------------------------------- helpers
# Shared with features.py.


@contextmanager
def inference(model: torch.nn.Module) -> Iterator[None]:
    """Within the block: ``model`` in eval mode and no autograd graph; each module's own
    ``training`` flag comes back on exit."""
    with evaluating(model), torch.no_grad():
        yield


def resolve_all(
    fn: str, model: torch.nn.Module, layers: Iterable[Layer]
) -> dict[str, torch.nn.Module]:
    """``{dotted name: module}`` for the modules or names in ``layers`` (in order, each once).

    Raises:
        ValueError: naming ``fn`` and the layer, for a name or module not in ``model``.
    """
    found: dict[str, torch.nn.Module] = {}
    for layer in layers:
        try:
            name, module = resolve(model, layer)
        except ValueError as error:
            raise ValueError(f"{fn}: {error}") from None
        found[name] = module
    return found


def _copy(value):
    # A detached copy, so that a later in-place op (ReLU(inplace=True)) cannot change it.
    return value.detach().clone() if isinstance(value, Tensor) else value


@contextmanager
def capturing(
    modules: dict[str, torch.nn.Module], *, inputs: bool = False
) -> Iterator[dict[str, list]]:
    """Within the block, each call of each module appends a detached copy of its output (of its
    first positional input with ``inputs=True``) to ``captured[name]``. The hooks are removed
    on exit, whatever happens.

    Unlike :func:`fastcnn.viz._layers.recording`, what is stored is a copy: a tensor recorded
    by reference would be overwritten by a following in-place op such as
    ``torch.nn.ReLU(inplace=True)``.
    """
    captured: dict[str, list] = {name: [] for name in modules}
    handles = []
    try:
        for name, module in modules.items():
            store = captured[name].append
            if inputs:
                hook = module.register_forward_pre_hook(lambda m, args, s=store: s(_copy(args[0])))
            else:
                hook = module.register_forward_hook(lambda m, args, out, s=store: s(_copy(out)))
            handles.append(hook)
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def model_device(model: torch.nn.Module, default: torch.device) -> torch.device:
    """The device of the model's first parameter or buffer; ``default`` when it has none."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return default


def only_call(fn: str, name: str, calls: list) -> Tensor:
    """The single output a layer gave in one forward pass.

    Raises:
        ValueError: when the layer did not run, or ran more than once.
    """
    if len(calls) != 1:
        what = "did not run" if not calls else f"ran {len(calls)} times"
        raise ValueError(
            f"{fn}: layer {name!r} {what} in the forward pass; expected one call "
            "(fastcnn.viz.activations gives the output of every call)"
        )
    if not isinstance(calls[0], Tensor):
        raise TypeError(f"{fn}: layer {name!r} returned {type(calls[0]).__name__}, not a Tensor")
    return calls[0]


def _per_call(name: str, calls: list) -> dict[str, Tensor]:
    if not calls:
        raise ValueError(f"activations: layer {name!r} did not run in the forward pass")
    if len(calls) == 1:
        return {name: calls[0]}
    return {f"{name}#{i}": out for i, out in enumerate(calls)}


def _first_conv(
    fn: str, model: torch.nn.Module, layer: Layer | None
) -> tuple[str, torch.nn.Conv2d]:
    if layer is None:
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Conv2d):
                return name, module
        raise ValueError(f"{fn}: the model has no Conv2d layer")
    ((name, module),) = resolve_all(fn, model, [layer]).items()
    if not isinstance(module, torch.nn.Conv2d):
        raise ValueError(f"{fn}: layer {name!r} is a {type(module).__name__}, not a Conv2d")
    return name, module


# ------------------------------------------------------------------------------ computation


def filters(model: torch.nn.Module, layer: Layer | None = None) -> Tensor:
    """The weights of a convolution: the model's first ``Conv2d`` (in ``named_modules()``
    order) by default, or the given one (a module or its dotted name).

    Returns:
        A detached copy, Tensor[K, C / groups, R, S].

    Raises:
        ValueError: the model has no Conv2d, or ``layer`` is missing or not a Conv2d.
    """
    return _first_conv("filters", model, layer)[1].weight.detach().clone()


def activations(
    model: torch.nn.Module, inputs: Tensor, layers: Layer | Iterable[Layer]
) -> dict[str, Tensor]:
    """The outputs of any set of layers for a batch, from one forward pass in eval mode without
    gradients (the model's modes are restored, no hook is left behind).

    Args:
        model: the network; ``inputs`` are moved to its device.
        inputs: the batch, e.g. Tensor[N, C, H, W].
        layers: a module or dotted name, or an iterable of them.

    Returns:
        ``{key: detached copy of the output}`` in the order of ``layers``. The key is the dotted
        name (``"features.0"``) when the layer ran once; a layer that ran several times (a
        module reused in ``forward``) gives one entry per call, ``"name#0"``, ``"name#1"``, ...
        in call order, and no plain ``"name"`` key.

    Raises:
        ValueError: a name or module not in the model (naming it), an empty ``layers``, or a
            layer that did not run.
    """
    if isinstance(layers, (str, torch.nn.Module)):
        layers = [layers]
    modules = resolve_all("activations", model, layers)
    if not modules:
        raise ValueError("activations: layers must name at least one layer, got none")
    with inference(model), capturing(modules) as captured:
        model(inputs.to(model_device(model, inputs.device)))
    return {
        key: out for name, calls in captured.items() for key, out in _per_call(name, calls).items()
    }


def feature_maps(model: torch.nn.Module, image: Tensor, layer: Layer) -> Tensor:
    """A layer's activation maps for one image, in eval mode without gradients.

    Args:
        image: Tensor[C, H, W] or [1, C, H, W].
        layer: a module or its dotted name; it must run once and output Tensor[1, K, H', W'].

    Returns:
        Tensor[K, H', W'] on the model's device.

    Raises:
        ValueError: a bad image shape, an unknown layer, a layer that did not run or ran more
            than once (use :func:`activations`), or an output that is not maps.
    """
    if isinstance(image, Tensor) and image.dim() == 3:
        image = image.unsqueeze(0)
    if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[0] != 1:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(
            f"feature_maps: image must be Tensor[C, H, W] or [1, C, H, W], got {shape}"
        )
    modules = resolve_all("feature_maps", model, [layer])
    with inference(model), capturing(modules) as captured:
        model(image.to(model_device(model, image.device)))
    ((name, calls),) = captured.items()
    out = only_call("feature_maps", name, calls)
    if out.dim() != 4:
        raise ValueError(
            f"feature_maps: layer {name!r} outputs shape {tuple(out.shape)}, "
            "not maps [1, K, H', W']"
        )
    return out[0]


# --------------------------------------------------------------------------------- plotting


def plot_filters(model: torch.nn.Module, layer: Layer | None = None, *, ax=None):
    """An image grid of a convolution's filters (see :func:`filters`), each scaled to its own
    range: in colour when they have 3 input channels, else in gray as the mean over the input
    channels (for a 1-channel input, the filter itself).

    Returns:
        The matplotlib Figure (``ax``'s, which the grid replaces, when given).
    """
    name, conv = _first_conv("plot_filters", model, layer)
    weight = _plot.displayable(conv.weight.detach().float().cpu())
    fig = _plot.grid(weight, ax=ax, size=0.8)
    if ax is None:
        k, c, r, s = conv.weight.shape
        fig.suptitle(f"{name}: {k} filters of {c}x{r}x{s}", fontsize=10)
    return fig


def plot_feature_maps(
    model: torch.nn.Module, image: Tensor, layer: Layer, *, max_maps: int = 64, ax=None
):
    """The input image beside a grid of a layer's activation maps for it (the first
    ``max_maps`` channels, each scaled to its own range). For a first convolution these are
    the edge / high-pass responses of its filters.

    Args:
        image: Tensor[C, H, W] or [1, C, H, W], as the model takes it.
        layer: a module or its dotted name (see :func:`feature_maps`).
        max_maps: how many channels to draw, >= 1.
        ax: an Axes whose place the image and the grid take.

    Returns:
        The matplotlib Figure.
    """
    if not isinstance(max_maps, int) or max_maps < 1:
        raise ValueError(f"plot_feature_maps: max_maps must be an int >= 1, got {max_maps!r}")
    every = feature_maps(model, image, layer).float().cpu()
    maps = every[:max_maps]
    name = next(iter(resolve_all("plot_feature_maps", model, [layer])))
    ncols = math.ceil(math.sqrt(maps.shape[0]))
    nrows = math.ceil(maps.shape[0] / ncols)
    fig, (left, right) = _plot.subplots(
        ax,
        1,
        2,
        figsize=(2.5 + 0.9 * ncols, max(2.5, 0.9 * nrows)),
        width_ratios=[2.5, 0.9 * ncols],
    )
    picture = image.detach().reshape(image.shape[-3:]).cpu()
    _plot.show(left, _plot.displayable(picture), "input")
    shown = f"{len(maps)} of {len(every)}" if len(maps) < len(every) else f"{len(maps)}"
    left.set_xlabel(f"{name}: {shown} maps of {maps.shape[1]}x{maps.shape[2]}", fontsize=8)
    _plot.grid(maps, ncols=ncols, cmap="viridis", ax=right)
    return fig
