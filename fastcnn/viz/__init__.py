"""See what a CNN learned: filters, feature maps, activations, feature-space neighbours and
embeddings, occlusion, saliency, guided backpropagation, Grad-CAM, Deep Dream and style
transfer. Compute functions return tensors; ``plot_*`` functions take ``ax=None`` and return
a matplotlib Figure. ``layer`` arguments take a module or its dotted name.

Submodules load on first use, so ``import fastcnn`` stays light. No submodule shares its name
with a function exported here: importing it would rebind the package attribute to the module.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "saliency": "input_gradients",
    "guided_backprop": "guided",
    "grad_cam": "cam",
    "guided_grad_cam": "cam",
    "occlusion": "occlusion_maps",
    "plot_attribution": "attribution_plots",
    "filters": "maps",
    "feature_maps": "maps",
    "activations": "maps",
    "plot_filters": "maps",
    "plot_feature_maps": "maps",
    "features": "feature_space",
    "nearest_neighbors": "feature_space",
    "embed": "feature_space",
    "plot_neighbors": "feature_space",
    "plot_embedding": "feature_space",
    "deep_dream": "dream",
    "style_transfer": "style",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fastcnn.viz' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
