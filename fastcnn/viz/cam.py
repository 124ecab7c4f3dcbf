"""Grad-CAM (Selvaraju et al.) and guided Grad-CAM."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._attribution import (
    check_inputs,
    check_model,
    check_target,
    class_scores,
    frozen_forward,
)
from ._layers import evaluating, recording, resolve
from .guided import guided_backprop

__all__ = ["grad_cam", "guided_grad_cam"]


def _activation_and_gradient(
    fn: str, model: torch.nn.Module, inputs: Tensor, target: Tensor, layer
) -> tuple[Tensor, Tensor]:
    """The layer's activation Tensor[N, K, h, w] and the gradient of the target class
    scores with respect to it (same shape)."""
    name, module = resolve(model, layer)
    x = inputs.detach().requires_grad_()  # so that the layer's output is in the graph
    with recording(model, [module]) as record, torch.enable_grad():
        scores = class_scores(fn, frozen_forward(model, x), target)
    outs = record[name]
    if len(outs) != 1:
        raise ValueError(
            f"{fn}: layer {name!r} ran {len(outs)} times in one forward pass; choose a module "
            "that runs once"
        )
    act = outs[0]
    if not isinstance(act, Tensor) or act.dim() != 4:
        shape = tuple(act.shape) if isinstance(act, Tensor) else type(act).__name__
        raise ValueError(
            f"{fn}: layer {name!r} must output a 4-D Tensor[N, C, h, w] activation, got {shape}"
        )
    (grad,) = torch.autograd.grad(scores.sum(), act)
    return act.detach(), grad


def grad_cam(model: torch.nn.Module, inputs: Tensor, target, *, layer) -> Tensor:
    """Grad-CAM: ``relu(sum_k alpha_k A_k)``, where ``A`` is the layer's activation
    Tensor[N, K, h, w] and ``alpha_k`` the gradient of the target class score with respect to
    channel ``A_k``, averaged over its h x w positions; upsampled bilinearly
    (``align_corners=False``) to the input's size. Before upsampling it equals Captum's
    ``LayerGradCam(model, layer).attribute(inputs, target, relu_attributions=True)``.

    The model runs in eval mode (each module's ``training`` flag is restored afterwards).

    Args:
        model: a classifier returning scores Tensor[N, classes].
        inputs: Tensor[N, C, H, W].
        target: class index, an int or a Tensor[N].
        layer: a module of ``model`` with a 4-D output (usually the last convolutional
            block), or its dotted name.

    Returns:
        Tensor[N, H, W]: one non-negative map per input, at the input's resolution.
    """
    fn = "grad_cam"
    check_model(fn, model)
    inputs = check_inputs(fn, inputs)
    target = check_target(fn, target, inputs.shape[0])
    with evaluating(model):
        act, grad = _activation_and_gradient(fn, model, inputs, target, layer)
    cam = (grad.mean((2, 3), keepdim=True) * act).sum(1, keepdim=True).relu()
    return F.interpolate(cam, size=inputs.shape[2:], mode="bilinear", align_corners=False)[:, 0]


def guided_grad_cam(model: torch.nn.Module, inputs: Tensor, target, *, layer) -> Tensor:
    """Guided Grad-CAM: guided backpropagation of the target class
    (:func:`~fastcnn.viz.guided_backprop`) times the :func:`grad_cam` map, as Captum's
    ``GuidedGradCam(model, layer).attribute(inputs, target, interpolate_mode="bilinear")``.

    Args:
        model: a classifier returning scores Tensor[N, classes].
        inputs: Tensor[N, C, H, W].
        target: class index, an int or a Tensor[N].
        layer: a module of ``model`` with a 4-D output, or its dotted name.

    Returns:
        Tensor[N, C, H, W], shaped like ``inputs``.
    """
    cam = grad_cam(model, inputs, target, layer=layer)
    return guided_backprop(model, inputs, target) * cam[:, None]
