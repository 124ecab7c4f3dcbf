"""Every public name has a docstring, and every public function that takes or returns tensors
says their shapes (``Tensor[N, C, H, W]``): the names DESIGN.md's public API lists, everything
in each package's ``__all__``, and the public methods of the public classes."""

from __future__ import annotations

import importlib
import inspect
import re

import pytest
import torch

PACKAGES = ["fastcnn", "fastcnn.ops", "fastcnn.nn", "fastcnn.data", "fastcnn.models"]
PACKAGES += ["fastcnn.train", "fastcnn.viz", "fastcnn.cli"]

# DESIGN.md, "Public API": the contract that code outside this repository relies on.
CONTRACT = {
    "fastcnn": ["info"],
    "fastcnn.ops": ["conv2d", "max_pool2d", "global_avg_pool2d", "relu", "guided_relu"],
    "fastcnn.nn": ["Conv2d", "MaxPool2d", "ReLU", "GuidedReLU", "GlobalAvgPool2d", "convert"],
    "fastcnn.viz": [
        "saliency",
        "guided_backprop",
        "occlusion",
        "grad_cam",
        "filters",
        "feature_maps",
        "activations",
        "features",
        "nearest_neighbors",
        "embed",
        "deep_dream",
        "style_transfer",
    ],  # fmt: skip
    "fastcnn.cli": ["main"],  # the `fastcnn` command's entry point
}

SHAPE = re.compile(r"Tensor\[[^\]]+\]")


def _public_objects():
    """(qualified name, object) of every public function, class and public method."""
    seen = {}
    for package in PACKAGES:
        module = importlib.import_module(package)
        names = set(getattr(module, "__all__", ())) | set(CONTRACT.get(package, ()))
        for name in sorted(names):
            obj = getattr(module, name)
            if inspect.ismodule(obj) or not callable(obj):
                continue
            seen.setdefault(f"{package}.{name}", obj)
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr.startswith("_") or attr == "forward":
                        continue  # a module's forward is documented on its class
                    if isinstance(member, (staticmethod, classmethod)):
                        member = member.__func__
                    if isinstance(member, property):
                        member = member.fget
                    if inspect.isfunction(member):
                        seen.setdefault(f"{package}.{name}.{attr}", member)
    return sorted(seen.items())


PUBLIC = _public_objects()


def _mentions_tensor(annotation) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return "Tensor" in text


def _takes_or_returns_tensors(obj) -> bool:
    fn = obj.forward if inspect.isclass(obj) and issubclass(obj, torch.nn.Module) else obj
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    annotations = [p.annotation for p in signature.parameters.values()]
    annotations.append(signature.return_annotation)
    return any(_mentions_tensor(a) for a in annotations if a is not inspect.Parameter.empty)


def test_the_walk_finds_the_contract():
    names = {name for name, _ in PUBLIC}
    for package, members in CONTRACT.items():
        for member in members:
            assert f"{package}.{member}" in names
    assert len(names) > 60


@pytest.mark.parametrize(("name", "obj"), PUBLIC, ids=[name for name, _ in PUBLIC])
def test_docstring(name, obj):
    doc = inspect.getdoc(obj)
    assert doc and len(doc.split()) >= 4, f"{name} has no docstring"
    if _takes_or_returns_tensors(obj):
        assert SHAPE.search(doc), f"{name} takes or returns tensors; its docstring names no shape"
