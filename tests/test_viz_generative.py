"""Deep Dream and style transfer: they move the image the way their objective says, keep shape
and range, are deterministic, leave the model as they found it, and reject bad arguments."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fastcnn
from fastcnn.viz import deep_dream, style_transfer
from fastcnn.viz.style import gram_matrix

FAST_DREAM = {"octaves": 2, "steps": 5}
FAST_STYLE = {"steps": 8}


def digits_net() -> nn.Module:
    torch.manual_seed(0)
    return fastcnn.models.DigitsNet(width=4).eval()


def vgg_net() -> nn.Module:
    torch.manual_seed(0)
    return fastcnn.models.VGGNet(width=4).eval()


def torch_vgg() -> nn.Sequential:
    """A small VGG built from torch.nn alone, with in-place ReLUs as torchvision's has."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(inplace=True),
    ).eval()


def images(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(1))


def mean_activation(model: nn.Module, x: torch.Tensor, layer: str, channel=None) -> float:
    module = dict(model.named_modules())[layer]
    found = []
    handle = module.register_forward_hook(lambda m, args, out: found.append(out))
    try:
        with torch.no_grad():
            model(x if x.dim() == 4 else x[None])
    finally:
        handle.remove()
    out = found[0] if channel is None else found[0][:, channel]
    return out.mean().item()


# Deep Dream ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer, channel, gain",
    [("features.3", None, 0.1), ("features.5", 3, 0.1), ("head.1", 7, 0.0)],  # head.1: a logit
)
def test_deep_dream_raises_the_activation(layer, channel, gain):
    model, image = digits_net(), images(1, 32, 32)
    out = deep_dream(model, image, layer, channel=channel, **FAST_DREAM)
    before = mean_activation(model, image, layer, channel)
    assert mean_activation(model, out, layer, channel) > before + gain * abs(before)


@pytest.mark.parametrize("shape", [(1, 32, 32), (2, 1, 28, 36)])
def test_deep_dream_keeps_shape_dtype_and_range(shape):
    image = images(*shape)
    out = deep_dream(digits_net(), image, "features.3", jitter=3, **FAST_DREAM)
    assert out.shape == image.shape and out.dtype == image.dtype
    assert not out.requires_grad
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, image)


def test_deep_dream_value_range():
    out = deep_dream(digits_net(), images(1, 32, 32), "features.3", value_range=(0.2, 0.6))
    assert out.min() >= 0.2 and out.max() <= 0.6


def test_deep_dream_is_deterministic_for_a_seed():
    model, image = digits_net(), images(1, 32, 32)
    first = deep_dream(model, image, "features.3", seed=3, **FAST_DREAM)
    again = deep_dream(model, image, "features.3", seed=3, **FAST_DREAM)
    other = deep_dream(model, image, "features.3", seed=4, **FAST_DREAM)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_deep_dream_takes_a_module_as_layer():
    model, image = digits_net(), images(1, 32, 32)
    by_name = deep_dream(model, image, "features.3", **FAST_DREAM)
    by_module = deep_dream(model, image, model.features[3], **FAST_DREAM)
    assert torch.equal(by_name, by_module)


def test_deep_dream_zero_steps_returns_the_image():
    image = images(1, 32, 32)
    out = deep_dream(digits_net(), image, "features.3", octaves=1, steps=0)
    torch.testing.assert_close(out, image)


# Style transfer ------------------------------------------------------------------------------

DIGITS_LAYERS = {"content_layers": ["features.3"], "style_layers": ["features.0", "features.1"]}


def first_and_last(history: list[dict[str, float]], scale: float = 1.0) -> tuple[float, float]:
    totals = [entry["total"] for entry in history if entry["scale"] == scale]
    return totals[0], totals[-1]


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_style_transfer_lowers_its_loss(optimizer):
    content, style = images(1, 32, 32), images(1, 32, 32).round()
    out, history = style_transfer(
        digits_net(),
        content,
        style,
        optimizer=optimizer,
        return_losses=True,
        **DIGITS_LAYERS,
        **FAST_STYLE,
    )
    assert out.shape == content.shape and out.min() >= 0 and out.max() <= 1
    assert len(history) == FAST_STYLE["steps"] + 1
    assert set(history[0]) == {"scale", "total", "content", "style", "tv"}
    first, last = first_and_last(history)
    assert last < 0.8 * first


def test_style_transfer_pyramid_from_noise():
    content, style = images(2, 1, 32, 32), images(1, 1, 24, 24)
    out, history = style_transfer(
        digits_net(),
        content,
        style,
        pyramid=[0.5, 1.0],
        init="noise",
        return_losses=True,
        **DIGITS_LAYERS,
        **FAST_STYLE,
    )
    assert out.shape == content.shape
    assert [h["scale"] for h in history] == [0.5] * 9 + [1.0] * 9
    for scale in (0.5, 1.0):
        first, last = first_and_last(history, scale)
        assert last < first
    assert history[0]["content"] > 0  # noise is not the content


def test_style_transfer_with_a_torch_vgg_and_sizes_that_differ():
    model = torch_vgg()
    content, style = images(3, 40, 32), images(3, 24, 48)
    out, history = style_transfer(
        model,
        content,
        style,
        content_layers=[model[4]],
        style_layers=[model[0], "3", "5"],
        optimizer="lbfgs",
        return_losses=True,
        **FAST_STYLE,
    )
    assert out.shape == content.shape
    first, last = first_and_last(history)
    assert last < 0.8 * first


def test_style_transfer_with_a_fastcnn_vgg():
    content, style = images(3, 32, 32), images(1, 3, 48, 40)
    out = style_transfer(
        vgg_net(),
        content,
        style,
        content_layers="features.4",
        style_layers=["features.0", "features.3"],
        **FAST_STYLE,
    )
    assert isinstance(out, torch.Tensor) and out.shape == content.shape


def test_style_transfer_with_only_style_weight_matches_the_gram_matrices():
    model, style = digits_net(), images(1, 32, 32).round()
    kwargs = {"content_weight": 0.0, "tv_weight": 0.0, "steps": 30, "return_losses": True}
    _, history = style_transfer(model, images(1, 32, 32), style, **DIGITS_LAYERS, **kwargs)
    assert history[-1]["style"] < 0.2 * history[0]["style"]


def test_progress_bars_can_be_shown(capsys):
    deep_dream(digits_net(), images(1, 32, 32), "features.3", progress=True, **FAST_DREAM)
    run_style(digits_net(), progress=True)
    assert "deep dream" in capsys.readouterr().err


@pytest.mark.needs_cuda
def test_on_cuda():
    model, image = digits_net().cuda(), images(1, 32, 32).cuda()
    dream = deep_dream(model, image, "features.3", **FAST_DREAM)
    styled = style_transfer(model, image, images(1, 24, 24).cuda(), **DIGITS_LAYERS, **FAST_STYLE)
    assert dream.device == styled.device == image.device
    cpu = deep_dream(digits_net(), image.cpu(), "features.3", **FAST_DREAM)
    torch.testing.assert_close(dream.cpu(), cpu, atol=1e-3, rtol=0)


def test_gram_matrix():
    features = torch.randn(2, 3, 4, 5)
    flat = features.flatten(2)
    expected = torch.einsum("nik,njk->nij", flat, flat) / (3 * 4 * 5)
    torch.testing.assert_close(gram_matrix(features), expected)


# Both: the model is left as found, errors -----------------------------------------------------


def run_dream(model: nn.Module) -> None:
    deep_dream(model, images(1, 32, 32), "features.5", channel=1, **FAST_DREAM)


def run_style(model: nn.Module, **kwargs) -> None:
    content, style = images(1, 32, 32), images(1, 32, 32)
    style_transfer(model, content, style, **DIGITS_LAYERS, **FAST_STYLE, **kwargs)


@pytest.mark.parametrize("run", [run_dream, run_style])
def test_model_is_left_as_found(run):
    model = digits_net().train()
    model.features[1].eval()  # a mixture of modes must survive too
    model.head[1].weight.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {name: m.training for name, m in model.named_modules()}
    wants_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    run(model)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key  # BatchNorm statistics included
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert {name: p.requires_grad for name, p in model.named_parameters()} == wants_grad
    assert all(p.grad is None for p in model.parameters())
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"layer": "features.9"}, ValueError, "layer: no module named 'features.9'"),
        ({"layer": nn.Conv2d(1, 1, 1)}, ValueError, "layer: Conv2d is not a module"),
        ({"layer": "features.5", "channel": 16}, ValueError, r"channel must be in \[0, 16\)"),
        ({"layer": "features.5", "channel": 1.0}, TypeError, "channel must be an int"),
        ({"octaves": 0}, ValueError, "octaves must be an int >= 1"),
        ({"octave_scale": 0.5}, ValueError, "octave_scale must be a number >= 1"),
        ({"steps": -1}, ValueError, "steps must be an int >= 0"),
        ({"lr": -0.1}, ValueError, "lr must be a number >= 0"),
        ({"value_range": (1, 0)}, ValueError, "value_range must be"),
        ({"image": torch.rand(32, 32)}, ValueError, r"image must be .* got shape \(32, 32\)"),
        ({"image": torch.ones(1, 8, 8, dtype=torch.long)}, TypeError, "floating-point"),
    ],
)
def test_deep_dream_errors(kwargs, error, match):
    args = {"image": images(1, 32, 32), "layer": "features.3", **kwargs}
    with pytest.raises(error, match=match):
        deep_dream(digits_net(), args.pop("image"), args.pop("layer"), **args)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"content_layers": ["nope"]}, ValueError, "content_layers: no module named 'nope'"),
        ({"style_layers": ["features.0", "x.1"]}, ValueError, "style_layers: no module named"),
        ({"content_layers": []}, ValueError, "content_layers must name at least one layer"),
        ({"style_layers": ()}, ValueError, "style_layers must name at least one layer"),
        ({"style_layers": 3}, TypeError, "style_layers must be a module, a dotted name"),
        ({"optimizer": "sgd"}, ValueError, r"optimizer must be one of \['lbfgs', 'adam'\]"),
        ({"init": "zeros"}, ValueError, "init must be one of"),
        ({"pyramid": [0.5]}, ValueError, "pyramid must be None or increasing scales"),
        ({"pyramid": [1.0, 0.5, 1.0]}, ValueError, "pyramid must be"),
        ({"pyramid": [0.0, 1.0]}, ValueError, "pyramid must be"),
        ({"steps": 0}, ValueError, "steps must be an int >= 1"),
        ({"style_weight": -1.0}, ValueError, "style_weight must be a number >= 0"),
        ({"style": torch.rand(3, 32, 32)}, ValueError, "style must have the content's channels"),
        ({"content": torch.rand(5)}, ValueError, "content must be"),
    ],
)
def test_style_transfer_errors(kwargs, error, match):
    args = {"content": images(1, 32, 32), "style": images(1, 32, 32), **DIGITS_LAYERS, **kwargs}
    with pytest.raises(error, match=match):
        style_transfer(digits_net(), args.pop("content"), args.pop("style"), **args)


def test_a_layer_the_forward_never_calls():
    model = digits_net()
    model.unused = nn.ReLU()
    with pytest.raises(RuntimeError, match=r"\['unused'\] are never called"):
        deep_dream(model, images(1, 32, 32), "unused", **FAST_DREAM)


def test_a_layer_that_outputs_no_tensor():
    model = digits_net()
    model.features[2] = fastcnn.nn.MaxPool2d(2, return_indices=True)
    with pytest.raises(TypeError, match="layer 'features.2' must output a Tensor, got tuple"):
        deep_dream(model, images(1, 32, 32), "features.2", **FAST_DREAM)
