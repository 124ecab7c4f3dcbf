"""Saliency maps (Simonyan et al.): the gradient of a class score with respect to the input
pixels, as Captum's ``Saliency(abs=True)``."""

from __future__ import annotations

import torch
from torch import Tensor

from ._attribution import (
    check_inputs,
    check_model,
    check_target,
    class_scores,
    input_gradient,
    reduce_channels,
)
from ._layers import evaluating

__all__ = ["reduce_channels", "saliency"]


def saliency(model: torch.nn.Module, inputs: Tensor, target, *, abs: bool = True) -> Tensor:
    """Gradient of each image's target class score with respect to its pixels: Captum's
    ``Saliency(model).attribute(inputs, target, abs=abs)``.

    The model runs in eval mode (each module's ``training`` flag is restored afterwards) and
    with its parameters detached, so no parameter gradient is computed or stored.

    Args:
        model: a classifier returning scores Tensor[N, classes].
        inputs: Tensor[N, C, H, W].
        target: class index, an int or a Tensor[N] (one per image).
        abs: return the absolute value of the gradient (the usual saliency map).

    Returns:
        Tensor[N, C, H, W], shaped like ``inputs``. Reduce the channels for display with
        :func:`reduce_channels`.
    """
    fn = "saliency"
    check_model(fn, model)
    inputs = check_inputs(fn, inputs)
    target = check_target(fn, target, inputs.shape[0])
    with evaluating(model):
        grad = input_gradient(model, inputs, lambda out: class_scores(fn, out, target))
    return grad.abs() if abs else grad
