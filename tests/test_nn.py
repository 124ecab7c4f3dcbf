"""fastcnn.nn layers against the torch.nn layers, and fastcnn.nn.convert."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import fastcnn.nn as fnn

DTYPES = [torch.float32, torch.float64]
FORMATS = [torch.contiguous_format, torch.channels_last]


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)


def _run(module, x: torch.Tensor, params: nn.Module | None = None):
    """Output, input gradient and parameter gradients (by name, of ``params``, by default
    ``module``) for a fixed random output gradient."""
    params = module if params is None else params
    x = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    params.zero_grad(set_to_none=True)
    res = module(x)
    out = res[0] if isinstance(res, tuple) else res
    gen = torch.Generator().manual_seed(1)
    out.backward(torch.randn(out.shape, dtype=out.dtype, generator=gen))
    grads = {n: p.grad for n, p in params.named_parameters()}
    return res, x.grad, grads


def _assert_same_run(actual, expected, **tol):
    (res, gx, grads), (t_res, t_gx, t_grads) = actual, expected
    torch.testing.assert_close(res, t_res, **tol)
    torch.testing.assert_close(gx, t_gx, **tol)
    assert grads.keys() == t_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], t_grads[name], **tol, msg=name)


CONV_CONFIGS = [
    dict(in_channels=4, out_channels=6, kernel_size=3),
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, bias=False),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), padding=(1, 2), dilation=(2, 1)),
    dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, padding=1),
    dict(in_channels=4, out_channels=4, kernel_size=3, groups=4, padding=1),  # depthwise
    dict(in_channels=4, out_channels=6, kernel_size=1, stride=2),
    dict(in_channels=4, out_channels=6, kernel_size=4, padding="same"),  # asymmetric
    dict(in_channels=4, out_channels=6, kernel_size=3, padding="same", dilation=2),
    dict(in_channels=4, out_channels=6, kernel_size=3, padding="valid"),
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, padding_mode="reflect"),
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=(2, 1), padding_mode="replicate"),
    dict(
        in_channels=4, out_channels=6, kernel_size=3, padding=2, stride=2, padding_mode="circular"
    ),
    dict(in_channels=4, out_channels=6, kernel_size=4, padding="same", padding_mode="reflect"),
    dict(in_channels=4, out_channels=6, kernel_size=3, padding="same", padding_mode="circular"),
]

POOL_CONFIGS = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(3, 2), stride=(1, 2), dilation=(2, 1), padding=(1, 0)),
    dict(kernel_size=3, stride=2, return_indices=True),
]

PAIRS = [
    (fnn.Conv2d, nn.Conv2d, dict(in_channels=3, out_channels=5, kernel_size=3, padding=1)),
    (fnn.MaxPool2d, nn.MaxPool2d, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    (fnn.ReLU, nn.ReLU, dict(inplace=True)),
]


class TestLayers:
    @pytest.mark.parametrize("cls, base, kwargs", PAIRS)
    def test_subclass_constructor_state_dict(self, cls, base, kwargs):
        assert issubclass(cls, base)
        assert inspect.signature(cls) == inspect.signature(base)
        ours, theirs = cls(**kwargs), base(**kwargs)
        assert ours.state_dict().keys() == theirs.state_dict().keys()
        for name in kwargs:
            assert getattr(ours, name) == getattr(theirs, name)
        assert repr(ours) == repr(theirs)
        ours.load_state_dict(theirs.state_dict())  # strict
        theirs.load_state_dict(ours.state_dict())

    def test_guided_relu_and_global_pool_are_modules(self):
        assert issubclass(fnn.GuidedReLU, nn.Module)
        assert issubclass(fnn.GlobalAvgPool2d, nn.Module)
        assert fnn.GuidedReLU().state_dict().keys() == nn.ReLU().state_dict().keys()
        assert dict(fnn.GlobalAvgPool2d(keepdim=True).state_dict()) == {}
        assert fnn.GlobalAvgPool2d().keepdim is False
        assert "keepdim=True" in repr(fnn.GlobalAvgPool2d(keepdim=True))

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("fmt", FORMATS, ids=["contiguous", "channels_last"])
    @pytest.mark.parametrize("config", CONV_CONFIGS, ids=str)
    def test_conv2d(self, dtype, fmt, config):
        theirs = nn.Conv2d(**config).to(dtype)
        ours = fnn.Conv2d(**config).to(dtype)
        ours.load_state_dict(theirs.state_dict())
        x = torch.randn(2, 4, 9, 8, dtype=dtype).contiguous(memory_format=fmt)
        _assert_same_run(_run(ours, x), _run(theirs, x), **_tol(dtype))

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("fmt", FORMATS, ids=["contiguous", "channels_last"])
    @pytest.mark.parametrize("config", POOL_CONFIGS, ids=str)
    def test_max_pool2d(self, dtype, fmt, config):
        x = torch.randn(2, 3, 9, 8, dtype=dtype).contiguous(memory_format=fmt)
        ours, theirs = _run(fnn.MaxPool2d(**config), x), _run(nn.MaxPool2d(**config), x)
        _assert_same_run(ours, theirs, rtol=0, atol=0)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("inplace", [False, True])
    def test_relu(self, dtype, inplace):
        x = torch.randn(2, 3, 5, 4, dtype=dtype)
        x[0, 0, 0, :2] = torch.tensor([float("nan"), float("inf")])
        before = x.clone()
        out = fnn.ReLU(inplace=inplace)(x)
        # As documented, inplace is accepted but the input is left unchanged.
        torch.testing.assert_close(x, before, equal_nan=True)
        torch.testing.assert_close(out, nn.ReLU()(x), equal_nan=True)
        x = torch.randn(2, 3, 5, 4, dtype=dtype)
        _assert_same_run(_run(fnn.ReLU(inplace), x), _run(nn.ReLU(), x), rtol=0, atol=0)

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_guided_relu(self, dtype):
        x = torch.randn(2, 3, 5, 4, dtype=dtype)
        (out, gx, _), (t_out, t_gx, _) = _run(fnn.GuidedReLU(), x), _run(nn.ReLU(), x)
        torch.testing.assert_close(out, t_out, rtol=0, atol=0)
        torch.testing.assert_close(gx, t_gx.clamp(min=0), rtol=0, atol=0)
        assert (t_gx < 0).any()  # the guided rule made a difference

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("fmt", FORMATS, ids=["contiguous", "channels_last"])
    @pytest.mark.parametrize("keepdim", [False, True])
    def test_global_avg_pool2d(self, dtype, fmt, keepdim):
        x = torch.randn(2, 6, 5, 7, dtype=dtype).contiguous(memory_format=fmt)
        theirs = (
            nn.AdaptiveAvgPool2d(1)
            if keepdim
            else nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        )
        ours = _run(fnn.GlobalAvgPool2d(keepdim=keepdim), x)
        _assert_same_run(ours, _run(theirs, x), **_tol(dtype))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True)
        )
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = BasicBlock(8, 8)
        self.layer2 = BasicBlock(8, 16, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.maxpool(self.stem(x))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _types(model: nn.Module) -> dict[str, type]:
    return {name: type(m) for name, m in model.named_modules()}


class MyConv(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) + 1


class TestConvert:
    def test_module_types(self):
        model = TinyResNet()
        converted = fnn.convert(model)
        before, after = _types(model), _types(converted)
        assert before.keys() == after.keys()
        swaps = {
            nn.Conv2d: fnn.Conv2d,
            nn.MaxPool2d: fnn.MaxPool2d,
            nn.ReLU: fnn.ReLU,
            nn.AdaptiveAvgPool2d: fnn.GlobalAvgPool2d,
        }
        for name, cls in before.items():
            assert after[name] is swaps.get(cls, cls), name
        assert sum(t is fnn.Conv2d for t in after.values()) == 6
        assert converted.layer1.relu.inplace  # attributes carried over

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("fmt", FORMATS, ids=["contiguous", "channels_last"])
    @pytest.mark.parametrize("train", [True, False])
    def test_same_outputs_and_grads(self, dtype, fmt, train):
        model = TinyResNet().to(dtype)
        with torch.no_grad():  # non-trivial running statistics for eval mode
            for _ in range(2):
                model(torch.randn(4, 3, 16, 16, dtype=dtype) * 2 + 0.5)
        model.train(train)
        converted = fnn.convert(model)
        assert converted.training == train
        x = torch.randn(3, 3, 16, 15, dtype=dtype).contiguous(memory_format=fmt)
        _assert_same_run(_run(converted, x), _run(model, x), **_tol(dtype))
        for (name, b), (_, tb) in zip(converted.named_buffers(), model.named_buffers()):
            torch.testing.assert_close(b, tb, **_tol(dtype), msg=name)

    def test_original_untouched(self):
        model = TinyResNet()
        types = _types(model)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        converted = fnn.convert(model)
        assert converted is not model
        assert _types(model) == types
        with torch.no_grad():
            for p in converted.parameters():
                p.add_(1.0)
        for k, v in model.state_dict().items():
            torch.testing.assert_close(v, state[k], rtol=0, atol=0)
        assert all(p is not q for p, q in zip(model.parameters(), converted.parameters()))

    def test_inplace_shares_parameters(self):
        model = TinyResNet()
        old_conv, old_relu = model.layer2.downsample[0], model.stem[2]
        params = dict(model.named_parameters())
        converted = fnn.convert(model, inplace=True)
        assert converted is model
        new_conv = model.layer2.downsample[0]
        assert type(new_conv) is fnn.Conv2d and type(model.stem[2]) is fnn.ReLU
        assert new_conv is not old_conv and type(old_relu) is nn.ReLU
        assert new_conv.weight is old_conv.weight
        for name, p in model.named_parameters():
            assert p is params[name], name
        with torch.no_grad():  # an update through one is seen by the other
            new_conv.weight.mul_(2)
        torch.testing.assert_close(old_conv.weight, new_conv.weight, rtol=0, atol=0)

    @pytest.mark.parametrize(
        "layer",
        [nn.Conv2d(3, 4, 3, bias=True), nn.MaxPool2d(2), nn.ReLU(), nn.AdaptiveAvgPool2d(1)],
        ids=lambda m: type(m).__name__,
    )
    def test_bare_layer(self, layer):
        converted = fnn.convert(layer, inplace=True)
        assert type(converted).__module__.startswith("fastcnn.nn")
        for (name, p), (_, q) in zip(converted.named_parameters(), layer.named_parameters()):
            assert p is q, name
        x = torch.randn(2, 3, 8, 8)
        torch.testing.assert_close(converted(x).reshape(layer(x).shape), layer(x))
        copy = fnn.convert(layer)
        assert all(p is not q for p, q in zip(copy.parameters(), layer.parameters()))

    def test_hooks_kept(self):
        model = TinyResNet()
        seen = []
        model.layer1.conv1.register_forward_hook(lambda m, i, o: seen.append(type(m)))
        fnn.convert(model)(torch.randn(1, 3, 8, 8))
        assert seen == [fnn.Conv2d]

    def test_nested_containers(self):
        model = nn.Sequential(
            nn.ModuleList([nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())]),
            nn.ModuleDict({"pool": nn.Sequential(nn.Sequential(nn.MaxPool2d(2)))}),
        )
        converted = fnn.convert(model)
        assert type(converted[0][0][0]) is fnn.Conv2d
        assert type(converted[0][0][1]) is fnn.ReLU
        assert type(converted[1]["pool"][0][0]) is fnn.MaxPool2d

    def test_leaves_subclasses_and_other_layers(self):
        model = nn.Sequential(
            MyConv(3, 4, 3), nn.AdaptiveAvgPool2d(2), nn.AdaptiveAvgPool2d((1, 2)), nn.ReLU6()
        )
        converted = fnn.convert(model)
        assert [type(m) for m in converted] == [type(m) for m in model]
        x = torch.randn(1, 3, 8, 8)
        torch.testing.assert_close(converted(x), model(x))

    def test_state_dict_round_trip(self):
        model = TinyResNet()
        converted = fnn.convert(TinyResNet())
        assert converted.state_dict().keys() == model.state_dict().keys()
        converted.load_state_dict(model.state_dict())  # original -> converted (strict)
        x = torch.randn(2, 3, 12, 12)
        model.eval(), converted.eval()
        torch.testing.assert_close(converted(x), model(x), rtol=1e-4, atol=1e-5)
        fresh = TinyResNet().eval()
        fresh.load_state_dict(converted.state_dict())  # converted -> original
        torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)

    @pytest.mark.parametrize("thing", [None, "model", torch.randn(2), [nn.ReLU()]])
    def test_not_a_module(self, thing):
        with pytest.raises(TypeError, match="convert: model must be a torch.nn.Module"):
            fnn.convert(thing)


def _small_cnn() -> nn.Module:
    return nn.Sequential(
        fnn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        fnn.ReLU(),
        fnn.MaxPool2d(2),
        fnn.Conv2d(8, 12, 3, stride=2, padding=1, padding_mode="reflect"),
        fnn.GuidedReLU(),
        fnn.GlobalAvgPool2d(),
        nn.Linear(12, 4),
    )


def test_compile_small_cnn():
    eager = _small_cnn()
    compiled_model = _small_cnn()
    compiled_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_model, fullgraph=True)
    x = torch.randn(2, 3, 16, 16)
    _assert_same_run(_run(compiled, x, compiled_model), _run(eager, x), rtol=1e-4, atol=1e-5)
    # The eager fastcnn model agrees with the same network in torch.nn.
    reference = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, stride=2, padding=1, padding_mode="reflect"),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(12, 4),
    )
    reference.load_state_dict(
        {
            k.replace("7.", "8.", 1) if k.startswith("7.") else k: v
            for k, v in eager.state_dict().items()
        }
    )
    torch.testing.assert_close(eager(x), reference(x), rtol=1e-4, atol=1e-5)
