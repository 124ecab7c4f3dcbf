"""Guided backpropagation (Springenberg et al.) on fastcnn's guided-ReLU backward, for a class
score (Captum's ``GuidedBackprop``) or an intermediate neuron (``NeuronGuidedBackprop``),
channel or layer, with several neurons or channels in one batched backward."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from .. import ops  # noqa: F401  (registers torch.ops.fastcnn.*)
from ._attribution import (
    check_inputs,
    check_model,
    check_target,
    class_scores,
    input_gradient,
)
from ._layers import evaluating, recording, resolve

__all__ = ["guided_backprop", "guided_relus"]


class _TorchGuidedReLU(torch.autograd.Function):
    """Guided ReLU for devices and dtypes fastcnn's kernel does not serve."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = x.clamp_min(0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return grad.clamp_min(0) * (y > 0)


def _guided(x: Tensor) -> Tensor:
    """ReLU whose backward is ``grad * (grad > 0) * (x > 0)``: ``fastcnn::guided_relu``."""
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        return torch.ops.fastcnn.guided_relu(x)
    return _TorchGuidedReLU.apply(x)


def _guided_inplace(x: Tensor) -> Tensor:
    """In-place ReLU made guided: ``x`` takes the guided result (autograd sees a copy, whose
    gradient is the identity), so code that ignores the return value still works."""
    return x.copy_(_guided(x))


def _relu_inplace_flag(args: tuple, kwargs: dict) -> bool:
    return bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))


def _fused_conv(args: tuple, kwargs: dict) -> Tensor:
    """``fastcnn::conv2d`` with its fused ReLU epilogue, run as the plain convolution followed
    by the guided ReLU (schema: input, weight, bias, stride, pad_begin, pad_end, dilation,
    groups, relu)."""
    args, kwargs = list(args), dict(kwargs)
    if "relu" in kwargs:
        kwargs["relu"] = False
    else:
        args[8] = False
    return _guided(torch.ops.fastcnn.conv2d(*args, **kwargs))


def _relu_call_is_fused(args: tuple, kwargs: dict) -> bool:
    return bool(kwargs.get("relu", args[8] if len(args) > 8 else False))


# Every way a model can call ReLU, and what it becomes under guided_relus().
_OUT_OF_PLACE = (torch.relu, torch.Tensor.relu)
_IN_PLACE = (torch.relu_, torch.Tensor.relu_)


def _fastcnn_ops() -> tuple[tuple, tuple]:
    registered = torch.ops.fastcnn
    relu, conv = registered.relu, registered.conv2d
    return (relu, relu.default), (conv, conv.default)


class _GuidedReLUMode(TorchFunctionMode):
    """Routes every ReLU call to the guided ReLU: ``F.relu`` (so ``nn.ReLU``, in place or
    not), ``torch.relu``, ``torch.relu_``, ``Tensor.relu``, ``Tensor.relu_``, fastcnn's
    ``relu`` op (``fastcnn.nn.ReLU``) and the ReLU fused into fastcnn's ``conv2d``."""

    def __init__(self) -> None:
        super().__init__()
        self._relu_ops, self._conv_ops = _fastcnn_ops()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = self._handler(func, args, kwargs)
        if handler is None:
            return func(*args, **kwargs)
        return handler()

    def _handler(self, func, args: tuple, kwargs: dict) -> Callable[[], Tensor] | None:
        if func is F.relu:
            return lambda: (_guided_inplace if _relu_inplace_flag(args, kwargs) else _guided)(
                args[0]
            )
        if func in _OUT_OF_PLACE or func in self._relu_ops:
            return lambda: _guided(args[0])
        if func in _IN_PLACE:
            return lambda: _guided_inplace(args[0])
        if func in self._conv_ops and _relu_call_is_fused(args, kwargs):
            return lambda: _fused_conv(args, kwargs)
        return None


@contextmanager
def guided_relus() -> Iterator[None]:
    """Within the block, every ReLU the code calls, however it calls it, runs as fastcnn's
    guided ReLU (forward unchanged; backward ``grad * (grad > 0) * (input > 0)``). Nothing is
    hooked or swapped: the effect ends with the block."""
    with _GuidedReLUMode():
        yield


def _is_index_tuple(value) -> bool:
    return isinstance(value, (tuple, list)) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    )


def _as_list(fn: str, name: str, value, single: Callable[[object], bool]) -> tuple[list, bool]:
    """``(items, many)``: one item, or a list of them (``many`` says which it was)."""
    if single(value):
        return [value], False
    if isinstance(value, (list, tuple)) and value and all(single(v) for v in value):
        return list(value), True
    raise TypeError(f"{fn}: {name} has the wrong form, got {value!r}")


def _layer_selector(fn: str, neuron, channel) -> tuple[list, bool, Callable]:
    """The neurons or channels asked for, whether several were, and a function from the
    layer's output Tensor[K, N, ...] (one row block per item) to the scores Tensor[K, N]."""
    if neuron is not None and channel is not None:
        raise ValueError(f"{fn}: give neuron or channel, not both")
    if neuron is not None:
        items, many = _as_list(
            fn, "neuron (a tuple of indices, or a list of them)", neuron, _is_index_tuple
        )
        return items, many, lambda out: _pick_neurons(fn, out, items)
    if channel is not None:
        items, many = _as_list(
            fn,
            "channel (an int, or a list of them)",
            channel,
            lambda c: isinstance(c, int) and not isinstance(c, bool),
        )
        return items, many, lambda out: _pick_channels(fn, out, items)
    return [None], False, lambda out: out.flatten(2).sum(2)


def _pick_neurons(fn: str, out: Tensor, neurons: list) -> Tensor:
    shape = tuple(out.shape[2:])
    strides = [math.prod(shape[i + 1 :]) for i in range(len(shape))]
    flat = []
    for neuron in neurons:
        if len(neuron) != len(shape) or any(not 0 <= i < s for i, s in zip(neuron, shape)):
            raise ValueError(
                f"{fn}: neuron {tuple(neuron)} is out of range for the layer's output of shape "
                f"{shape} per input"
            )
        flat.append(sum(i * s for i, s in zip(neuron, strides)))
    rows = torch.arange(len(neurons), device=out.device)
    return out.flatten(2)[rows, :, torch.tensor(flat, device=out.device)]


def _pick_channels(fn: str, out: Tensor, channels: list) -> Tensor:
    if out.dim() < 3:
        raise ValueError(
            f"{fn}: channel needs a layer output with channels Tensor[N, C, ...], got one of "
            f"shape {tuple(out.shape[1:])}"
        )
    count = out.shape[2]
    for c in channels:
        if not 0 <= c < count:
            raise ValueError(f"{fn}: channel {c} is out of range for a layer with {count} channels")
    rows = torch.arange(len(channels), device=out.device)
    index = torch.tensor(channels, device=out.device)
    return out.flatten(3).sum(3)[rows, :, index]


def _layer_gradient(
    fn: str, model: torch.nn.Module, inputs: Tensor, layer, neuron, channel
) -> Tensor:
    """Guided gradient of the selected neurons / channels / whole layer, all in one backward
    over the input repeated once per item: Tensor[N, C, H, W], or [K, N, C, H, W] for K
    items given as a list."""
    name, module = resolve(model, layer)
    items, many, select = _layer_selector(fn, neuron, channel)
    k, n = len(items), inputs.shape[0]

    def score(output) -> Tensor:
        outs = record[name]
        if len(outs) != 1:
            raise ValueError(
                f"{fn}: layer {name!r} ran {len(outs)} times in one forward pass; choose a "
                "module that runs once"
            )
        out = outs[0]
        if not isinstance(out, Tensor) or out.dim() < 2:
            raise ValueError(f"{fn}: layer {name!r} must output a Tensor[N, ...]")
        return select(out.reshape(k, n, *out.shape[1:]))

    with recording(model, [module]) as record, guided_relus():
        grad = input_gradient(model, inputs.repeat(k, 1, 1, 1), score)
    grad = grad.reshape(k, *inputs.shape)
    return grad if many else grad[0]


def guided_backprop(
    model: torch.nn.Module,
    inputs: Tensor,
    target=None,
    *,
    layer: torch.nn.Module | str | None = None,
    neuron: Sequence[int] | Sequence[Sequence[int]] | None = None,
    channel: int | Sequence[int] | None = None,
) -> Tensor:
    """Guided backpropagation: the input gradient with every ReLU's backward replaced by
    fastcnn's guided-ReLU backward, ``grad * (grad > 0) * (input > 0)``.

    What is differentiated:

    - ``target`` (a class): the class score, as Captum's ``GuidedBackprop``;
    - ``layer`` and ``neuron=(c, y, x)`` (indices into one input's layer output): that
      neuron, as Captum's ``NeuronGuidedBackprop``;
    - ``layer`` and ``channel=c``: the channel's activation summed over its positions;
    - ``layer`` alone: the whole layer's activation, summed.

    Several neurons (``neuron=[(c, y, x), ...]``) or channels (``channel=[c1, c2]``) are
    computed in one backward pass over the inputs repeated once per item.

    The ReLUs are made guided however the model calls them (``nn.ReLU``, in place or not,
    ``fastcnn.nn.ReLU``, ``F.relu``, ``torch.relu``/``relu_``, ``Tensor.relu``/``relu_``,
    fastcnn's fused conv+ReLU) by a :class:`~torch.overrides.TorchFunctionMode` active
    only during this call. The model is left as it was found: no hooks, no swapped modules,
    the same ``training`` flags (it runs in eval mode), no parameter gradient touched.

    Args:
        model: a :class:`torch.nn.Module`; with ``target``, one returning Tensor[N, classes].
        inputs: Tensor[N, C, H, W].
        target: class index, an int or a Tensor[N]; or None with ``layer``.
        layer: a module of ``model`` or its dotted name.
        neuron: indices of one neuron in one input's layer output, or a list of them.
        channel: a channel of the layer's output, or a list of them.

    Returns:
        Tensor[N, C, H, W] shaped like ``inputs``; Tensor[K, N, C, H, W] for a list of K
        neurons or channels (entry k belongs to item k).
    """
    fn = "guided_backprop"
    check_model(fn, model)
    inputs = check_inputs(fn, inputs)
    if (target is None) == (layer is None):
        given = "both" if layer is not None else "neither"
        raise ValueError(f"{fn}: give either target (a class) or layer, got {given}")
    if layer is None and (neuron is not None or channel is not None):
        raise ValueError(f"{fn}: neuron and channel need a layer")
    with evaluating(model):
        if layer is not None:
            return _layer_gradient(fn, model, inputs, layer, neuron, channel)
        target = check_target(fn, target, inputs.shape[0])
        with guided_relus():
            return input_gradient(model, inputs, lambda out: class_scores(fn, out, target))
