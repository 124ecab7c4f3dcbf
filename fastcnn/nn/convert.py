"""Swap the torch.nn layers of a model for fastcnn's, keeping parameters and hooks."""

from __future__ import annotations

import copy

import torch

from .modules import Conv2d, GlobalAvgPool2d, MaxPool2d, ReLU

__all__ = ["convert"]

# Exact types only: a user's subclass of nn.Conv2d may change forward, so it is left alone.
_SWAPS = {torch.nn.Conv2d: Conv2d, torch.nn.MaxPool2d: MaxPool2d, torch.nn.ReLU: ReLU}


def _is_global_pool(module: torch.nn.Module) -> bool:
    return type(module) is torch.nn.AdaptiveAvgPool2d and module.output_size in (1, (1, 1), [1, 1])


def _swapped(module: torch.nn.Module) -> torch.nn.Module | None:
    target = _SWAPS.get(type(module))
    if target is not None:
        # Same attributes, same Parameter objects, same hooks: only the class changes.
        new = target.__new__(target)
        new.__dict__ = module.__dict__.copy()
        return new
    if _is_global_pool(module):
        new = GlobalAvgPool2d(keepdim=True)
        new.train(module.training)
        return new
    return None


def convert(model: torch.nn.Module, inplace: bool = False) -> torch.nn.Module:
    """Replace ``nn.Conv2d``, ``nn.MaxPool2d``, ``nn.ReLU`` and ``nn.AdaptiveAvgPool2d(1)``
    anywhere in ``model`` with the fastcnn layers.

    Converted layers hold the same parameters (the very Parameter objects of the model they
    are taken from), buffers and hooks, so ``state_dict`` keys and values are unchanged.

    Args:
        model: any :class:`torch.nn.Module`; a bare layer is converted too.
        inplace: modify ``model`` itself; by default a deep copy is converted and ``model``
            is left untouched.

    Returns:
        The converted model.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"convert: model must be a torch.nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    root = _swapped(model)
    if root is not None:
        return root
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            new = _swapped(child)
            if new is not None:
                setattr(parent, name, new)
    return model
