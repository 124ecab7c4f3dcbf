"""fastcnn.viz attributions against Captum (a test-only dependency): saliency, guided
backpropagation (class, neuron, channel, layer; every way of calling ReLU), Grad-CAM and
guided Grad-CAM, occlusion (incremental and whole, both convolution backends, many model
shapes), their figures and their error messages."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastcnn
import fastcnn.nn as fnn
from fastcnn import viz

captum_attr = pytest.importorskip("captum.attr")

# Float32 maps: sums of many terms in a different order (BatchNorm folded, convolutions on
# crops) differ by a few ulps of the scores, so the tolerance is relative to the map's scale.
RTOL = 1e-4


def assert_same_map(actual: torch.Tensor, expected: torch.Tensor, scale: float = 0.0) -> None:
    """Equal up to float32 rounding of values of size ``scale`` (default: the map's)."""
    scale = scale or float(expected.abs().max()) or 1.0
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=1e-5 * scale)


def assert_same_occlusion(actual, expected, model, x) -> None:
    """Occlusion maps are differences of scores: their rounding follows the scores' size."""
    with torch.no_grad():
        scores = float(model(x).abs().max())
    assert_same_map(actual, expected, max(scores, float(expected.abs().max())))


@pytest.fixture(autouse=True)
def _quiet_captum():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum warns about its backward hooks
        yield


def randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial eval-mode statistics and affine parameters, so folding is exercised."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


def plain_net() -> nn.Module:
    """torch.nn layers only, with in-place ReLU, a strided and a dilated convolution."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, stride=2, padding=1),
        nn.BatchNorm2d(12),
        nn.ReLU(inplace=True),
        nn.Conv2d(12, 12, 3, padding=2, dilation=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(12, 5),
    )


REFERENCE_MODELS = {
    "plain": (plain_net, (2, 3, 20, 20)),
    "digits": (lambda: fastcnn.models.DigitsNet(width=4), (2, 1, 32, 32)),
    "vgg": (lambda: fastcnn.models.VGGNet(width=4), (1, 3, 32, 32)),
    "resnet18": (lambda: fastcnn.models.ResNet18(width=4, num_classes=10), (1, 3, 64, 64)),
    "resnet18_small": (
        lambda: fastcnn.models.ResNet18(width=4, num_classes=10, small_input=True),
        (2, 3, 32, 32),
    ),
}


@pytest.fixture(params=sorted(REFERENCE_MODELS))
def model_and_input(request):
    build, shape = REFERENCE_MODELS[request.param]
    return randomize_batchnorm(build()), torch.randn(shape)


def targets(n: int) -> torch.Tensor:
    return torch.arange(n) % 3 + 1


# ------------------------------------------------------------------------ saliency


@pytest.mark.parametrize("absolute", [True, False])
def test_saliency_equals_captum(model_and_input, absolute):
    model, x = model_and_input
    t = targets(len(x))
    expected = captum_attr.Saliency(model).attribute(x, target=t, abs=absolute)
    assert_same_map(viz.saliency(model, x, t, abs=absolute), expected)


def test_saliency_takes_an_int_target_and_reduces_channels():
    model, x = randomize_batchnorm(plain_net()), torch.randn(2, 3, 20, 20)
    expected = captum_attr.Saliency(model).attribute(x, target=2)
    grad = viz.saliency(model, x, 2)
    assert_same_map(grad, expected)
    reduce = sys.modules["fastcnn.viz.input_gradients"].reduce_channels
    torch.testing.assert_close(reduce(grad, "max"), grad.abs().amax(1))
    torch.testing.assert_close(reduce(grad[0], "sum"), grad[0].sum(0))


# ----------------------------------------------------------------- guided backprop


def test_guided_backprop_equals_captum(model_and_input):
    model, x = model_and_input
    t = targets(len(x))
    expected = captum_attr.GuidedBackprop(model).attribute(x, target=t)
    assert_same_map(viz.guided_backprop(model, x, t), expected)


@pytest.mark.parametrize("neuron", [(1, 2, 3), (0, 0, 0), (3, 7, 7)])
def test_neuron_guided_backprop_equals_captum(neuron):
    model, x = randomize_batchnorm(fastcnn.models.DigitsNet(width=4)), torch.randn(3, 1, 32, 32)
    layer = model.features[3]  # conv-bn-relu at 16x16
    expected = captum_attr.NeuronGuidedBackprop(model, layer).attribute(x, neuron)
    assert_same_map(viz.guided_backprop(model, x, layer="features.3", neuron=neuron), expected)
    assert_same_map(viz.guided_backprop(model, x, layer=layer, neuron=list(neuron)), expected)


def test_batched_neurons_and_channels_equal_one_at_a_time():
    model, x = randomize_batchnorm(fastcnn.models.DigitsNet(width=4)), torch.randn(2, 1, 32, 32)
    neurons = [(0, 1, 2), (5, 10, 3), (7, 15, 15)]
    many = viz.guided_backprop(model, x, layer="features.3", neuron=neurons)
    assert many.shape == (3, *x.shape)
    for k, neuron in enumerate(neurons):
        one = viz.guided_backprop(model, x, layer="features.3", neuron=neuron)
        torch.testing.assert_close(many[k], one)
    channels = [2, 0, 3]
    many = viz.guided_backprop(model, x, layer="features.1", channel=channels)
    for k, c in enumerate(channels):
        one = viz.guided_backprop(model, x, layer="features.1", channel=c)
        torch.testing.assert_close(many[k], one)
    whole = viz.guided_backprop(model, x, layer="features.1")
    assert whole.shape == x.shape and whole.abs().sum() > 0


class ReluStyles(nn.Module):
    """The same network with its ReLUs called in one of many ways."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self.style = style
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, 4)
        modules = {
            "nn.ReLU": nn.ReLU(),
            "nn.ReLU(inplace)": nn.ReLU(inplace=True),
            "fastcnn.nn.ReLU": fnn.ReLU(),
        }
        self.act = modules.get(style, nn.Identity())

    def relu(self, x: torch.Tensor) -> torch.Tensor:
        s = self.style
        if s in ("nn.ReLU", "nn.ReLU(inplace)", "fastcnn.nn.ReLU"):
            return self.act(x)
        calls = {
            "F.relu": lambda: F.relu(x),
            "F.relu(inplace)": lambda: F.relu(x, inplace=True),
            "torch.relu": lambda: torch.relu(x),
            "torch.relu_": lambda: torch.relu_(x),
            "Tensor.relu": lambda: x.relu(),
            "fastcnn.ops.relu": lambda: fastcnn.ops.relu(x),
        }
        if s == "Tensor.relu_ (result ignored)":
            x.relu_()
            return x
        return calls.get(s, calls["F.relu"])()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.style == "fused conv+relu":
            c = self.conv1
            x = fastcnn.ops.conv2d(x, c.weight, c.bias, padding=1, activation="relu")
            x = F.relu(self.bn(x))
        else:
            x = self.relu(self.bn(self.relu(self.conv1(x))))
        x = self.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


STYLES = [
    "nn.ReLU(inplace)",
    "fastcnn.nn.ReLU",
    "F.relu",
    "F.relu(inplace)",
    "torch.relu",
    "torch.relu_",
    "Tensor.relu",
    "Tensor.relu_ (result ignored)",
    "fastcnn.ops.relu",
    "fused conv+relu",
]


@pytest.mark.parametrize("style", STYLES)
def test_guided_backprop_whichever_way_relu_is_called(style):
    reference = randomize_batchnorm(ReluStyles("nn.ReLU"))
    model = ReluStyles(style).eval()
    model.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 12, 12)
    expected = captum_attr.GuidedBackprop(reference).attribute(x, target=1)
    assert_same_map(viz.guided_backprop(model, x, 1), expected)
    plain = captum_attr.Saliency(reference).attribute(x, target=1, abs=False)
    assert not torch.allclose(expected, plain)  # the guided map is not the plain gradient
    neuron = viz.guided_backprop(model, x, layer="conv2", neuron=(3, 2, 4))
    neuron_expected = captum_attr.NeuronGuidedBackprop(reference, reference.conv2).attribute(
        x, (3, 2, 4)
    )
    assert_same_map(neuron, neuron_expected)


def test_model_is_left_as_it_was_found():
    model = randomize_batchnorm(fastcnn.models.DigitsNet(width=4))
    x = torch.randn(2, 1, 32, 32)

    def plain_gradient() -> torch.Tensor:
        xi = x.clone().requires_grad_()
        model(xi)[:, 3].sum().backward()
        return xi.grad

    before = plain_gradient()
    model.zero_grad(set_to_none=True)
    model.train()  # its flags must come back; BatchNorm statistics must not move
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    modules_before = [(n, type(m)) for n, m in model.named_modules()]
    viz.guided_backprop(model, x, 3)
    viz.guided_backprop(model, x, layer="features.3", neuron=[(0, 1, 1), (1, 2, 2)])
    viz.saliency(model, x, 3)
    viz.grad_cam(model, x, 3, layer="features.5")
    viz.occlusion(model, x, 3, window=8, stride=8)
    assert all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, stats[k], msg=k)
    assert [(n, type(m)) for n, m in model.named_modules()] == modules_before
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert not m._backward_hooks and not m._backward_pre_hooks
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    torch.testing.assert_close(plain_gradient(), before)


# ---------------------------------------------------------------------------- Grad-CAM


def test_grad_cam_equals_a_direct_reimplementation(model_and_input):
    model, x = model_and_input
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    layer = dict(model.named_modules())[convs[-1]]
    t = targets(len(x))
    recorded = []
    handle = layer.register_forward_hook(lambda m, a, out: recorded.append(out))
    try:
        scores = model(x).gather(1, t[:, None]).sum()
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(scores, recorded[0])
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * recorded[0]).sum(1, keepdim=True))
    expected = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    actual = viz.grad_cam(model, x, t, layer=convs[-1])
    assert actual.shape == (x.shape[0], *x.shape[2:])
    assert_same_map(actual, expected.detach())


def test_grad_cam_and_guided_grad_cam_equal_captum():
    model, x = randomize_batchnorm(fastcnn.models.VGGNet(width=4)), torch.randn(2, 3, 32, 32)
    layer = model.features[7]
    gradcam = captum_attr.LayerGradCam(model, layer).attribute(x, 2, relu_attributions=True)
    expected = captum_attr.LayerAttribution.interpolate(gradcam, (32, 32), "bilinear")[:, 0]
    assert_same_map(viz.grad_cam(model, x, 2, layer=layer), expected)
    expected = captum_attr.GuidedGradCam(model, layer).attribute(x, 2, interpolate_mode="bilinear")
    assert_same_map(viz.guided_grad_cam(model, x, 2, layer="features.7"), expected)


# --------------------------------------------------------------------------- occlusion

occlusion_module = sys.modules[viz.occlusion.__module__]


def captum_occlusion(model, x, target, window, stride, baseline=0.0):
    c = x.shape[1]
    window = (window, window) if isinstance(window, int) else window
    stride = (stride, stride) if isinstance(stride, int) else stride
    return captum_attr.Occlusion(model).attribute(
        x,
        sliding_window_shapes=(c, *window),
        strides=(c, *stride),
        baselines=baseline,
        target=target,
        perturbations_per_eval=32,
    )


@pytest.mark.parametrize("backend", ["fastcnn", "torch"])
def test_occlusion_equals_captum(model_and_input, backend, monkeypatch):
    monkeypatch.setattr(occlusion_module, "_conv_backend", lambda *args: backend)
    model, x = model_and_input
    t = targets(len(x))
    window, stride = (8, 4) if x.shape[-1] > 20 else (5, 3)
    expected = captum_occlusion(model, x, t, window, stride)
    actual = viz.occlusion(model, x, t, window=window, stride=stride)
    assert_same_occlusion(actual, expected, model, x)


@pytest.mark.parametrize(
    "shape, window, stride, max_batch",
    [
        ((2, 3, 20, 20), (6, 4), (4, 3), None),
        ((2, 3, 20, 20), 7, 5, 3),
        ((2, 3, 20, 20), (20, 3), (1, 2), 40),
        ((1, 3, 18, 27), 4, 4, 1),
        ((1, 3, 17, 23), (5, 9), (2, 7), 7),
    ],
)
def test_occlusion_geometry_and_batching(shape, window, stride, max_batch):
    """Windows cut at the edges, non-square images, windows and strides, a window as tall as
    the image, and batches that split rows of windows."""
    model, x = randomize_batchnorm(plain_net()), torch.randn(shape)
    expected = captum_occlusion(model, x, 4, window, stride)
    actual = viz.occlusion(
        model, x, 4, window=window, stride=stride, max_batch=max_batch, progress=True
    )
    assert actual.shape == x.shape
    assert_same_occlusion(actual, expected, model, x)
    whole = viz.occlusion(model, x, 4, window=window, stride=stride, incremental=False)
    assert_same_occlusion(whole, expected, model, x)


def test_occlusion_with_a_tensor_baseline():
    model, x = randomize_batchnorm(fastcnn.models.DigitsNet(width=4)), torch.randn(2, 1, 32, 32)
    baseline = torch.randn(1, 1, 32, 32)
    for b in (baseline, 0.5):
        expected = captum_occlusion(model, x, 1, 6, 4, baseline=b)
        actual = viz.occlusion(model, x, 1, window=6, stride=4, baseline=b)
        assert_same_occlusion(actual, expected, model, x)


class Functional(nn.Module):
    """Functional and in-place calls (one changing a tensor another layer already read), a
    residual sum, 'same' padding, average pooling, a parameter the size of the feature map,
    and a concatenation (unknown to the planner: the rest of the network runs whole)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 4, padding="same")
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.pool = nn.AvgPool2d(2)
        self.gain = nn.Parameter(torch.rand(1, 8, 8, 8) + 0.5)
        self.conv3 = nn.Conv2d(16, 6, 3, stride=2)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv1(x), inplace=True)
        z = self.conv2(y)
        y.mul_(0.5)  # after conv2 read y: only the sum below sees the change
        z += y
        z = torch.sigmoid(self.pool(z.relu_())) * self.gain
        z = torch.cat([z, z * 2], 1)
        return self.fc(F.relu(self.conv3(z)).flatten(2).amax(2))


def test_occlusion_on_functional_models_and_untraceable_ones():
    model, x = Functional().eval(), torch.randn(2, 3, 16, 16)
    expected = captum_occlusion(model, x, 2, 5, 3)
    assert_same_occlusion(viz.occlusion(model, x, 2, window=5, stride=3), expected, model, x)

    class DataDependent(Functional):
        def forward(self, x):  # control flow on values: torch.fx cannot trace it
            return super().forward(x) if x.sum() > -1e9 else x

    untraceable = DataDependent().eval()
    untraceable.load_state_dict(model.state_dict())
    assert occlusion_module._trace(untraceable) is None
    actual = viz.occlusion(untraceable, x, 2, window=5, stride=3)
    assert_same_occlusion(actual, expected, model, x)


def test_occlusion_only_recomputes_what_windows_reach():
    """The plan evaluates the first layers of a ResNet on small boxes."""
    model, x = fastcnn.models.ResNet18(width=4, num_classes=10).eval(), torch.randn(1, 3, 96, 96)
    graph, ops = occlusion_module._trace(model)
    clean = occlusion_module._clean_pass(graph, ops, model, x)
    starts = torch.arange(0, 81, 8)
    windows = occlusion_module._Reach(starts, starts + 16, starts, starts + 16)
    plan = occlusion_module._plan(graph, ops, clean, windows, occlusion_module._Memory())
    stem = next(n for n in graph.nodes if n.name.startswith("stem_0"))
    assert (plan.boxes[stem].h, plan.boxes[stem].w) == (11, 11)  # of 48 x 48
    assert "bn" not in " ".join(n.name for n in graph.nodes)  # folded into the convolutions


# ------------------------------------------------------------------------------ plots


@pytest.mark.parametrize(
    "method, sign",
    [
        ("heat_map", "absolute_value"),
        ("heat_map", "all"),
        ("overlay", "positive"),
        ("overlay", "all"),
        ("masked_image", "absolute_value"),
    ],
)
def test_plot_attribution_writes_a_picture(tmp_path, method, sign):
    pytest.importorskip("matplotlib")
    model, x = randomize_batchnorm(fastcnn.models.DigitsNet(width=4)), torch.rand(1, 1, 32, 32)
    maps = {
        "saliency": viz.saliency(model, x, 1)[0],
        "grad_cam": viz.grad_cam(model, x, 1, layer="features.5")[0],
        "occlusion": viz.occlusion(model, x, 1, window=8, stride=4)[0],
    }
    for name, attribution in maps.items():
        fig = viz.plot_attribution(x[0], attribution, method=method, sign=sign, title=name)
        path = tmp_path / f"{name}.png"
        fig.savefig(path)
        pixels = plt_image(path)
        assert pixels.std() > 0.02, name


def test_plot_attribution_draws_into_a_given_axes(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure()
    axes = fig.subplots(1, 2)
    image, attribution = torch.rand(3, 16, 16), torch.randn(3, 16, 16)
    drawn = viz.plot_attribution(image, attribution, ax=axes[1], reduce="max", cmap="jet")
    assert drawn is fig
    fig.savefig(tmp_path / "two.png")
    assert plt_image(tmp_path / "two.png").std() > 0.02


def plt_image(path):
    from matplotlib.image import imread

    return imread(path)[..., :3]


# ----------------------------------------------------------------------------- errors


def test_errors_are_clear():
    model, x = randomize_batchnorm(fastcnn.models.DigitsNet(width=4)), torch.randn(2, 1, 32, 32)
    with pytest.raises(ValueError, match="layer: no module named 'nope'"):
        viz.guided_backprop(model, x, layer="nope")
    with pytest.raises(ValueError, match=r"neuron \(9, 0, 0\) is out of range.*\(8, 16, 16\)"):
        viz.guided_backprop(model, x, layer="features.3", neuron=(9, 0, 0))
    with pytest.raises(ValueError, match="neuron .* out of range"):
        viz.guided_backprop(model, x, layer="features.3", neuron=(1, 2))
    with pytest.raises(ValueError, match="channel 8 is out of range for a layer with 8"):
        viz.guided_backprop(model, x, layer="features.3", channel=[1, 8])
    with pytest.raises(ValueError, match="give either target .* or layer, got neither"):
        viz.guided_backprop(model, x)
    for fn in (viz.saliency, viz.guided_backprop, viz.occlusion):
        with pytest.raises(ValueError, match="target class 10 is out of range .* 10 outputs"):
            fn(model, x, 10)
        with pytest.raises(ValueError, match=r"inputs must be 4-D Tensor\[N, C, H, W\]"):
            fn(model, x[0], 1)
        with pytest.raises(ValueError, match="one class index per input"):
            fn(model, x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="target class -1 is out of range"):
        viz.grad_cam(model, x, torch.tensor([0, -1]), layer="features.5")
    with pytest.raises(ValueError, match=r"must output a 4-D Tensor\[N, C, h, w\]"):
        viz.grad_cam(model, x, 1, layer="head.1")
    with pytest.raises(ValueError, match="window .* larger than the image"):
        viz.occlusion(model, x, 1, window=33)
    with pytest.raises(ValueError, match="stride .* must not exceed the window"):
        viz.occlusion(model, x, 1, window=4, stride=5)
    with pytest.raises(ValueError, match="window must be an int >= 1 or a pair"):
        viz.occlusion(model, x, 1, window=(4, 0))
    with pytest.raises(ValueError, match="baseline must be a number or a Tensor broadcastable"):
        viz.occlusion(model, x, 1, baseline=torch.zeros(3, 32, 32))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        viz.saliency(lambda t: t, x, 1)
    with pytest.raises(ValueError, match="method must be one of"):
        viz.plot_attribution(x[0], x[0], method="contour")
    with pytest.raises(ValueError, match="masked_image' needs a sign other than 'all'"):
        viz.plot_attribution(x[0], x[0], method="masked_image", sign="all")
