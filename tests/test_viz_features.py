"""fastcnn.viz.maps and fastcnn.viz.feature_space: filters, feature maps, activations, feature
vectors, exact chunked nearest neighbours, PCA / t-SNE embeddings, and their figures."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch
from conftest import devices
from torch import nn

import fastcnn
from fastcnn import viz

features = viz.features

# ------------------------------------------------------------------------------- fixtures


@pytest.fixture
def net() -> fastcnn.models.DigitsNet:
    """A small DigitsNet in training mode whose batch norms have non-trivial running
    statistics, so that eval mode and training mode give different outputs."""
    model = fastcnn.models.DigitsNet(width=4)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.train()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(6, 1, 32, 32)


def eval_forward(model: fastcnn.models.DigitsNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Some of DigitsNet's layer outputs, by calling its modules by hand in eval mode (on a
    copy of the model, whose own mode stays as it is)."""
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        out = {"features.0.0": model.features[0][0](model.normalize(x))}
        out["features.0"] = model.features[0][2](model.features[0][1](out["features.0.0"]))
        out["features"] = model.features[1:](out["features.0"])
        out["head.0"] = model.head[0](out["features"])
        out["head.1"] = model.head[1](out["head.0"])
    return out


def assert_no_hooks(model: nn.Module) -> None:
    for name, module in model.named_modules():
        assert not module._forward_hooks, name
        assert not module._forward_pre_hooks, name


# ---------------------------------------------------------------------- nearest neighbours


def brute_force(queries, gallery, k, metric):
    """The k nearest by a full torch.cdist and a stable sort (ties: lower index first)."""
    if metric == "l1":
        dist = torch.cdist(queries, gallery, p=1)
    else:
        dist = torch.cdist(queries, gallery, p=2) ** 2 / queries.shape[1]
    dist, idx = dist.sort(dim=1, stable=True)
    return dist[:, :k], idx[:, :k]


def assert_same_neighbors(got, expected):
    torch.testing.assert_close(got[0], expected[0])
    assert torch.equal(got[1], expected[1])


@pytest.mark.parametrize("metric", ["l1", "mse"])
@pytest.mark.parametrize("chunk_size", [1, 3, 17, 64, 1000, None])
def test_nearest_neighbors_equal_brute_force(metric, chunk_size):
    queries, gallery = torch.randn(9, 8), torch.randn(64, 8)
    got = viz.nearest_neighbors(queries, gallery, k=5, metric=metric, chunk_size=chunk_size)
    assert got[0].shape == got[1].shape == (9, 5)
    assert got[1].dtype == torch.long
    assert (got[0].diff(dim=1) >= 0).all()
    assert_same_neighbors(got, brute_force(queries, gallery, 5, metric))


@pytest.mark.parametrize("metric", ["l1", "mse"])
@pytest.mark.parametrize("chunk_size", [1, 2, 7, None])
def test_nearest_neighbors_break_ties_by_lower_index(metric, chunk_size):
    # Small integers: distances are exact in every formula, and many are equal.
    queries = torch.randint(0, 2, (12, 3)).float()
    gallery = torch.randint(0, 2, (40, 3)).float()
    got = viz.nearest_neighbors(queries, gallery, k=6, metric=metric, chunk_size=chunk_size)
    assert_same_neighbors(got, brute_force(queries, gallery, 6, metric))

    same = viz.nearest_neighbors(queries[:2], torch.ones(10, 3), k=4, chunk_size=chunk_size)
    assert same[1].tolist() == [[0, 1, 2, 3]] * 2


def test_nearest_neighbors_tiles_queries_under_the_memory_budget():
    queries, gallery = torch.randn(50, 4), torch.randn(30, 4)
    got = viz.nearest_neighbors(queries, gallery, k=3, max_memory=30 * 4 * 21)
    assert_same_neighbors(got, brute_force(queries, gallery, 3, "l1"))


@pytest.mark.parametrize("metric", ["l1", "mse"])
def test_nearest_neighbors_large_gallery_small_memory(monkeypatch, metric):
    queries, gallery = torch.randn(8, 64), torch.randn(100_000, 64)
    budget = 2**20
    tiles = []
    cdist = torch.cdist

    def spy(x1, x2, *args, **kwargs):
        tiles.append((len(x1), len(x2)))
        return cdist(x1, x2, *args, **kwargs)

    monkeypatch.setattr(torch, "cdist", spy)
    got = viz.nearest_neighbors(queries, gallery, k=5, metric=metric, max_memory=budget)
    monkeypatch.undo()
    assert len(tiles) > 1
    assert max(q * g for q, g in tiles) * 4 <= budget
    assert_same_neighbors(got, brute_force(queries, gallery, 5, metric))


def test_nearest_neighbors_dtypes_and_empty_queries():
    queries, gallery = torch.randn(3, 4, dtype=torch.float64), torch.randn(9, 4)
    dist, idx = viz.nearest_neighbors(queries, gallery, k=2)
    assert dist.dtype == torch.float64
    ints = viz.nearest_neighbors(torch.tensor([[0, 1]]), torch.tensor([[5, 5], [0, 2]]), k=1)
    assert ints[0].dtype == torch.float32 and ints[1].tolist() == [[1]]
    dist, idx = viz.nearest_neighbors(torch.empty(0, 4), gallery, k=3)
    assert dist.shape == idx.shape == (0, 3)


@pytest.mark.needs_cuda
def test_nearest_neighbors_cpu_gallery_cuda_queries():
    queries, gallery = torch.randn(5, 16), torch.randn(300, 16)
    dist, idx = viz.nearest_neighbors(queries.cuda(), gallery, k=4, metric="mse", chunk_size=64)
    assert idx.device.type == "cuda"
    assert_same_neighbors((dist.cpu(), idx.cpu()), brute_force(queries, gallery, 4, "mse"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metric": "cosine"}, "metric must be one of"),
        ({"k": 11}, r"k must be an int in \[1, 10\]"),
        ({"k": 0}, "k must be"),
        ({"gallery": torch.randn(10, 5)}, "same feature dimension D"),
        ({"queries": torch.randn(4)}, r"queries must be a Tensor\[Q, D\]"),
        ({"queries": torch.tensor([[float("nan")] * 4])}, "queries contains NaN"),
        ({"chunk_size": 0}, "chunk_size must be an int >= 1"),
        ({"max_memory": 0}, "max_memory must be an int >= 1"),
    ],
)
def test_nearest_neighbors_errors(kwargs, match):
    args = {"queries": torch.randn(3, 4), "gallery": torch.randn(10, 4), **kwargs}
    with pytest.raises(ValueError, match=match):
        viz.nearest_neighbors(**args)


# ------------------------------------------------------------------------------ embeddings


def scaled_data(n: int = 60, d: int = 6) -> torch.Tensor:
    """Gaussian data with clearly distinct variances along random directions (float64)."""
    basis = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))[0]
    scales = torch.linspace(3.0, 0.5, d, dtype=torch.float64)
    return torch.randn(n, d, dtype=torch.float64) * scales @ basis.T + 2.0


@pytest.mark.parametrize("dim", [2, 3])
def test_pca_matches_sklearn_up_to_sign(dim):
    PCA = pytest.importorskip("sklearn.decomposition").PCA
    x = scaled_data()
    points = viz.embed(x, "pca", dim)
    reference = PCA(n_components=dim).fit(x.numpy())
    expected = torch.from_numpy(reference.transform(x.numpy()))
    signs = (points * expected).sum(dim=0).sign()
    torch.testing.assert_close(points * signs, expected)
    variance = points.var(dim=0)
    torch.testing.assert_close(variance, torch.from_numpy(reference.explained_variance_))
    assert (variance.diff() < 0).all()


def test_pca_reconstructs_data_of_rank_dim():
    x = torch.randn(40, 2, dtype=torch.float64) @ torch.randn(2, 10, dtype=torch.float64) + 5
    points = viz.embed(x, dim=2)
    centered = x - x.mean(dim=0)
    torch.testing.assert_close(points @ points.T, centered @ centered.T)


def test_pca_signs_are_deterministic():
    x = scaled_data()
    points = viz.embed(x)
    order = torch.randperm(len(x))
    torch.testing.assert_close(viz.embed(x[order]), points[order])
    torch.testing.assert_close(viz.embed(-x), -points)


@pytest.mark.parametrize("device", devices())
def test_pca_keeps_device_and_float_dtype(device):
    x = torch.randint(0, 9, (20, 5), device=device)
    points = viz.embed(x, dim=3)
    assert points.shape == (20, 3)
    assert points.device.type == device and points.dtype == torch.float32
    assert viz.embed(x.double()).dtype == torch.float64


TSNE_FAST = {
    "sklearn": {"max_iter": 250},
    "opentsne": {"n_iter": 30, "early_exaggeration_iter": 20},
}


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("backend", ["sklearn", "opentsne"])
def test_tsne_runs(backend, dim):
    pytest.importorskip({"sklearn": "sklearn", "opentsne": "openTSNE"}[backend])
    x = torch.cat([torch.randn(20, 5), torch.randn(20, 5) + 6])
    points = viz.embed(x, "tsne", dim, backend=backend, **TSNE_FAST[backend])
    assert points.shape == (40, dim) and points.dtype == torch.float32
    assert torch.isfinite(points).all()


def test_tsne_import_errors(monkeypatch):
    x = torch.randn(10, 3)
    monkeypatch.setitem(sys.modules, "openTSNE", None)
    with pytest.raises(ImportError, match="pip install openTSNE"):
        viz.embed(x, "tsne", backend="opentsne")
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    with pytest.raises(ImportError, match="needs openTSNE or scikit-learn"):
        viz.embed(x, "tsne")


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((torch.randn(10, 4), "pca", 4), {}, ValueError, "dim must be 2 or 3"),
        ((torch.randn(10, 4), "pca", 1), {}, ValueError, "dim must be 2 or 3"),
        ((torch.randn(10, 4), "umap"), {}, ValueError, "method must be one of"),
        ((torch.randn(10),), {}, ValueError, r"features must be a Tensor\[N, D\]"),
        ((torch.randn(10, 2), "pca", 3), {}, ValueError, "PCA to dim=3 needs"),
        ((torch.randn(10, 4),), {"perplexity": 5}, TypeError, "method='pca' takes no other"),
        ((torch.randn(3, 4), "tsne"), {}, ValueError, "at least 4 points"),
        ((torch.randn(9, 4), "tsne"), {"backend": "umap"}, ValueError, "backend must be"),
    ],
)
def test_embed_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        viz.embed(*args, **kwargs)


# ----------------------------------------------------------------------------- activations


def test_activations_equal_a_manual_forward(net, images):
    layers = ["features.0.0", net.features[0], "head.0", net.head[1]]
    got = viz.activations(net, images, layers)
    assert list(got) == ["features.0.0", "features.0", "head.0", "head.1"]
    assert net.training and all(m.training for m in net.modules())
    assert not any(t.requires_grad for t in got.values())
    expected = eval_forward(net, images)
    for name, value in got.items():
        torch.testing.assert_close(value, expected[name])


def test_activations_take_one_layer_or_a_container(net, images):
    assert list(viz.activations(net, images, "features.0")) == ["features.0"]
    got = viz.activations(net, images, net.features)
    torch.testing.assert_close(got["features"], eval_forward(net, images)["features"])


def test_activations_restore_each_module_mode(net, images):
    net.features[0][1].eval()
    modes = [m.training for m in net.modules()]
    viz.activations(net, images, ["head.0"])
    assert [m.training for m in net.modules()] == modes


class Raises(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def test_activations_leave_no_hook_even_when_forward_raises(net, images):
    viz.activations(net, images, [name for name, _ in net.named_modules()])
    assert_no_hooks(net)
    broken = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), Raises()).train()
    with pytest.raises(RuntimeError, match="boom"):
        viz.activations(broken, images, ["0", "1", broken[2]])
    assert_no_hooks(broken)
    assert all(m.training for m in broken.modules())


class Twice(nn.Module):
    """A shared ReLU, called twice in one forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(self.relu(x - 0.5)))


def test_module_called_twice_yields_each_call(images):
    model = Twice()
    got = viz.activations(model, images, ["relu", model.conv])
    assert list(got) == ["relu#0", "relu#1", "conv"]
    first = torch.relu(images - 0.5)
    torch.testing.assert_close(got["relu#0"], first)
    torch.testing.assert_close(got["conv"], model.conv(first).detach())
    torch.testing.assert_close(got["relu#1"], torch.relu(got["conv"]))


def test_activations_are_copies_that_in_place_ops_do_not_change(images):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True))
    got = viz.activations(model, images, ["0"])["0"]
    assert (got < 0).any()
    torch.testing.assert_close(got, model[0](images).detach())


def test_activations_bad_layers(net, images):
    with pytest.raises(ValueError, match="activations: .*'features.9'"):
        viz.activations(net, images, ["head.0", "features.9"])
    with pytest.raises(ValueError, match="Conv2d is not a module of the model"):
        viz.activations(net, images, [nn.Conv2d(1, 1, 1)])
    with pytest.raises(ValueError, match="at least one layer"):
        viz.activations(net, images, [])
    assert_no_hooks(net)


# -------------------------------------------------------------------------------- features


def test_features_default_to_the_classifier_input(net, images):
    got = features(net, images, batch_size=4)
    assert got.shape == (6, 16)
    assert net.training
    torch.testing.assert_close(got, eval_forward(net, images)["head.0"])
    assert_no_hooks(net)


def test_features_of_a_plain_sequential():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 8), nn.ReLU(), nn.Linear(8, 3)
    )
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(features(model, x, batch_size=2), model[:4](x).detach())


def test_features_of_any_layer_flattened(net, images):
    got = features(net, images, "features.0.0", batch_size=5)
    expected = eval_forward(net, images)["features.0.0"]
    torch.testing.assert_close(got, expected.flatten(1))
    assert features(net, images[:0]).shape == (0, 16)


def test_public_names_are_the_functions_whatever_was_imported_first():
    for name in viz.__all__:
        getattr(viz, name)  # loads every submodule
    for name in viz.__all__:
        assert callable(getattr(viz, name)) and getattr(viz, name).__name__ == name, name


def test_features_errors(net, images):
    with pytest.raises(ValueError, match="no nn.Linear"):
        features(nn.Sequential(nn.Conv2d(1, 2, 3)), images)
    with pytest.raises(ValueError, match="'relu' ran 2 times"):
        features(Twice(), images, "relu")
    with pytest.raises(ValueError, match="batch_size must be"):
        features(net, images, batch_size=0)
    with pytest.raises(ValueError, match="features: .*'nope'"):
        features(net, images, "nope")


# ------------------------------------------------------------------------------------ maps


def test_filters(net):
    weight = viz.filters(net)
    assert weight.shape == (4, 1, 3, 3)
    torch.testing.assert_close(weight, net.features[0][0].weight.detach())
    assert viz.filters(net, "features.3.0").shape == (8, 4, 3, 3)
    assert viz.filters(net, net.features[5][0]).shape == (16, 8, 3, 3)
    with pytest.raises(ValueError, match="'head.1' is a Linear, not a Conv2d"):
        viz.filters(net, "head.1")
    with pytest.raises(ValueError, match="no Conv2d"):
        viz.filters(nn.Linear(2, 2))


def test_feature_maps(net, images):
    expected = eval_forward(net, images[:1])["features.0"][0]
    for image in (images[0], images[:1]):
        maps = viz.feature_maps(net, image, "features.0")
        assert maps.shape == (4, 32, 32)
        torch.testing.assert_close(maps, expected)
    assert net.training
    assert viz.feature_maps(net, images[0], net.features[4]).shape == (8, 8, 8)
    with pytest.raises(ValueError, match=r"image must be Tensor\[C, H, W\]"):
        viz.feature_maps(net, images, "features.0")
    with pytest.raises(ValueError, match="'head.1' outputs shape"):
        viz.feature_maps(net, images[0], "head.1")
    with pytest.raises(ValueError, match="'relu' ran 2 times"):
        viz.feature_maps(Twice(), images[0], "relu")


# -------------------------------------------------------------------------------- plotting


def png_std(fig, path) -> float:
    """The standard deviation of the figure's pixels, saved as a PNG and read back."""
    from PIL import Image

    fig.savefig(path)
    return float(np.asarray(Image.open(path).convert("L"), dtype=np.float64).std())


def rgb_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU(), nn.AdaptiveAvgPool2d(1))


PLOTS = {
    "filters": lambda net, x, ax: viz.plot_filters(net, ax=ax),
    "filters_rgb": lambda net, x, ax: viz.plot_filters(rgb_model(), ax=ax),
    "filters_deep": lambda net, x, ax: viz.plot_filters(net, "features.3.0", ax=ax),
    "feature_maps": lambda net, x, ax: viz.plot_feature_maps(
        net, x[0], "features.0", max_maps=3, ax=ax
    ),
    "feature_maps_rgb": lambda net, x, ax: viz.plot_feature_maps(
        rgb_model(), torch.rand(3, 12, 12), "1", ax=ax
    ),
    "neighbors": lambda net, x, ax: viz.plot_neighbors(
        x[:2], x, torch.tensor([[1, 2, 3], [0, 4, 5]]), dist=torch.rand(2, 3), ax=ax
    ),
    "neighbors_no_dist": lambda net, x, ax: viz.plot_neighbors(
        x[:1], x, torch.tensor([[5, 4]]), ax=ax
    ),
    "embedding": lambda net, x, ax: viz.plot_embedding(
        torch.randn(30, 2), torch.arange(30) % 3, classes=["a", "b", "c"], ax=ax
    ),
    "embedding_3d": lambda net, x, ax: viz.plot_embedding(
        torch.randn(30, 3), np.arange(30) % 4, ax=ax
    ),
    "embedding_unlabelled": lambda net, x, ax: viz.plot_embedding(torch.randn(30, 2), ax=ax),
    "embedding_many_classes": lambda net, x, ax: viz.plot_embedding(
        torch.randn(60, 2), torch.arange(60) % 30, ax=ax
    ),
}


@pytest.mark.parametrize("name", list(PLOTS))
def test_plots_write_a_png_that_is_not_blank(name, net, images, tmp_path):
    from matplotlib.figure import Figure

    fig = PLOTS[name](net, images, None)
    assert isinstance(fig, Figure)
    assert png_std(fig, tmp_path / "alone.png") > 10

    host = Figure(figsize=(8, 4))
    ax = host.subplots(1, 2)[1]
    assert PLOTS[name](net, images, ax) is host
    assert png_std(host, tmp_path / "in_ax.png") > 10


def test_plot_errors(net, images):
    with pytest.raises(ValueError, match="max_maps must be an int >= 1"):
        viz.plot_feature_maps(net, images[0], "features.0", max_maps=0)
    with pytest.raises(ValueError, match=r"idx must index gallery_images, in \[0, 6\)"):
        viz.plot_neighbors(images[:1], images, torch.tensor([[6]]))
    with pytest.raises(ValueError, match="idx must be an integer Tensor"):
        viz.plot_neighbors(images[:2], images, torch.tensor([[1]]))
    with pytest.raises(ValueError, match="same"):
        viz.plot_neighbors(images[:1, :, :8], images, torch.tensor([[1]]))
    with pytest.raises(ValueError, match=r"points must be a Tensor\[N, 2\] or \[N, 3\]"):
        viz.plot_embedding(torch.randn(5, 4))
    with pytest.raises(ValueError, match="labels must be integers indexing classes"):
        viz.plot_embedding(torch.randn(3, 2), [0, 1, 2], classes=["a", "b"])
    with pytest.raises(ValueError, match="one entry per point"):
        viz.plot_embedding(torch.randn(3, 2), [0, 1])


def test_plot_primitives_take_the_place_of_an_axes():
    from matplotlib.figure import Figure

    from fastcnn.viz import _plot

    host = Figure()
    fig, axes = _plot.figure(host.subplots(), 2, 3)
    assert fig is host and axes.shape == (2, 3) and len(host.axes) == 6
    row = Figure().subplots(1, 3)
    assert _plot.figure(row, 1, 3)[1].shape == (1, 3)
    fig, axes = _plot.subplots(Figure().subplots(1, 2)[0], 2, 2, projection="3d")
    assert len(axes) == 4 and all(a.name == "3d" for a in axes) and len(fig.axes) == 5
    with pytest.raises(ValueError, match="ax: must be an Axes placed by a grid"):
        _plot.grid(torch.rand(4, 1, 5, 5), ax=Figure().add_axes((0, 0, 1, 1)))
    assert _plot.displayable(torch.rand(2, 4, 5, 5)).shape == (2, 1, 5, 5)
    assert _plot.displayable(torch.rand(3, 5, 5)).shape == (3, 5, 5)
