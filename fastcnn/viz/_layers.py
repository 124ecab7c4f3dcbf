"""Finding layers by module or dotted name, and recording what they output."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch


def resolve(model: torch.nn.Module, layer: torch.nn.Module | str) -> tuple[str, torch.nn.Module]:
    """``(dotted name, module)`` for a module of ``model`` or its name in ``named_modules()``."""
    for name, module in model.named_modules():
        if module is layer or name == layer:
            return name, module
    if isinstance(layer, str):
        known = [n for n, _ in model.named_modules() if n][:12]
        raise ValueError(f"layer: no module named {layer!r} in the model; names look like {known}")
    raise ValueError(f"layer: {type(layer).__name__} is not a module of the model")


@contextmanager
def recording(model: torch.nn.Module, layers: Iterable) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Within the block, every output of each layer is appended to ``outputs[name]`` (a module
    called twice yields two entries; a layer listed twice is recorded once). Outputs are the
    tensors themselves, still in the autograd graph (gradients flow through them), so an
    in-place op after the layer changes them. The hooks are removed on exit, whatever happens."""
    outputs: dict[str, list[torch.Tensor]] = {}
    handles = []
    try:
        for layer in layers:
            name, module = resolve(model, layer)
            if name in outputs:
                continue
            outputs[name] = []
            handles.append(
                module.register_forward_hook(
                    lambda mod, args, out, name=name: outputs[name].append(out)
                )
            )
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Runs the block with every module in eval mode (BatchNorm on its running statistics,
    no dropout), then gives each module its own ``training`` flag back, whatever happens (so a
    model with some layers frozen in eval mode keeps them so)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag
