"""Argument checks and model handling shared by the attribution methods (saliency, guided
backprop, Grad-CAM, occlusion) and their plots."""

from __future__ import annotations

import torch
from torch import Tensor


def check_model(fn: str, model) -> None:
    """``model`` is a :class:`torch.nn.Module`."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{fn}: model must be a torch.nn.Module, got {type(model).__name__}")


def check_inputs(fn: str, inputs) -> Tensor:
    """``inputs`` is a floating-point Tensor[N, C, H, W]; returned detached."""
    if not isinstance(inputs, Tensor):
        raise TypeError(f"{fn}: inputs must be a Tensor[N, C, H, W], got {type(inputs).__name__}")
    if inputs.dim() != 4:
        raise ValueError(
            f"{fn}: inputs must be 4-D Tensor[N, C, H, W], got shape {tuple(inputs.shape)}"
        )
    if not inputs.is_floating_point():
        raise TypeError(f"{fn}: inputs must be a floating-point tensor, got {inputs.dtype}")
    return inputs.detach()


def check_target(fn: str, target, n: int) -> Tensor:
    """``target`` (an int, or a sequence / 1-D integer Tensor of ``n`` class indices) as a
    LongTensor[n]. Its range is checked by :func:`class_scores` once the output is known."""
    if isinstance(target, bool) or target is None:
        raise TypeError(
            f"{fn}: target must be an int or a Tensor[N] of class indices, got {target!r}"
        )
    if isinstance(target, int):
        return torch.full((n,), target, dtype=torch.long)
    t = torch.as_tensor(target)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{fn}: target must hold integer class indices, got dtype {t.dtype}")
    if t.dim() == 0:
        return t.long().cpu().expand(n).clone()
    if t.dim() != 1 or t.numel() != n:
        raise ValueError(
            f"{fn}: target must be an int or hold one class index per input ({n}), "
            f"got shape {tuple(t.shape)}"
        )
    return t.long().cpu()


def class_scores(fn: str, output, target: Tensor) -> Tensor:
    """``output[i, target[i]]`` for logits Tensor[N, K]: Tensor[N]."""
    if not isinstance(output, Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(f"{fn}: the model must return scores Tensor[N, classes], got {shape}")
    k = output.shape[1]
    bad = (target < 0) | (target >= k)
    if bool(bad.any()):
        raise ValueError(
            f"{fn}: target class {int(target[bad][0])} is out of range for a model with {k} outputs"
        )
    target = target.to(output.device)
    return output.gather(1, target[:, None])[:, 0]


def frozen_forward(model: torch.nn.Module, inputs: Tensor):
    """``model(inputs)`` with the parameters detached: gradients flow to the input only (no
    wasted weight gradients), and no parameter's ``.grad`` is ever touched."""
    params = {name: p.detach() for name, p in model.named_parameters()}
    return torch.func.functional_call(model, params, (inputs,), strict=False, tie_weights=True)


def input_gradient(model: torch.nn.Module, inputs: Tensor, score) -> Tensor:
    """Gradient of ``score(output).sum()`` with respect to Tensor[N, C, H, W] ``inputs``."""
    x = inputs.detach().requires_grad_()
    with torch.enable_grad():
        total = score(frozen_forward(model, x)).sum()
        (grad,) = torch.autograd.grad(total, x)
    return grad


def reduce_channels(attribution: Tensor, how: str = "max") -> Tensor:
    """One value per pixel for display: the maximum of the absolute values over the channels
    (``"max"``, Simonyan et al.'s saliency map) or their sum (``"sum"``, as Captum's plots).

    Args:
        attribution: Tensor[N, C, H, W] or Tensor[C, H, W].
        how: ``"max"`` or ``"sum"``.

    Returns:
        Tensor[N, H, W] or Tensor[H, W].
    """
    if not isinstance(attribution, Tensor) or attribution.dim() not in (3, 4):
        shape = tuple(attribution.shape) if isinstance(attribution, Tensor) else attribution
        raise ValueError(
            f"reduce_channels: attribution must be Tensor[N, C, H, W] or [C, H, W], got {shape}"
        )
    dim = attribution.dim() - 3
    if how == "max":
        return attribution.abs().amax(dim)
    if how == "sum":
        return attribution.sum(dim)
    raise ValueError(f"reduce_channels: how must be 'max' or 'sum', got {how!r}")
