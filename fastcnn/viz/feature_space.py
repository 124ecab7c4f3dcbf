"""Feature space: the vectors a network computes for images, the nearest images to a query in
that space (exact, chunked so that large galleries fit in memory), and 2-D / 3-D embeddings
(PCA in torch, t-SNE through openTSNE or scikit-learn) with their figures."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from . import _plot
from .maps import Layer, capturing, inference, model_device, only_call, resolve_all

__all__ = ["embed", "features", "nearest_neighbors", "plot_embedding", "plot_neighbors"]

logger = logging.getLogger(__name__)

METRICS = ("l1", "mse")
EMBEDDINGS = ("pca", "tsne")
TSNE_BACKENDS = ("auto", "opentsne", "sklearn")

# Queries per step when the gallery chunk is sized from the memory budget: chunks of about
# this many queries and max_memory / (this x bytes per pair) gallery vectors.
_QUERY_TILE = 1024


# -------------------------------------------------------------------------------- features


def _positive(fn: str, arg: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{fn}: {arg} must be an int >= 1, got {value!r}")


def _classifier(model: torch.nn.Module) -> tuple[str, torch.nn.Module]:
    """The last ``nn.Linear`` of the model in ``named_modules()`` order."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if not found:
        raise ValueError(
            "features: the model has no nn.Linear whose input to take; pass layer= to choose one"
        )
    return found[-1]


def _rows(fn: str, name: str, out: Tensor, n: int) -> Tensor:
    """Tensor[n, ...] flattened to Tensor[n, D]."""
    if out.dim() == 0 or out.shape[0] != n:
        raise ValueError(
            f"{fn}: layer {name!r} gave shape {tuple(out.shape)} for a batch of {n}; "
            "expected one row per input"
        )
    return out.flatten(1) if out.dim() > 1 else out.unsqueeze(1)


def features(
    model: torch.nn.Module, inputs: Tensor, layer: Layer | None = None, *, batch_size: int = 256
) -> Tensor:
    """Feature vectors of a batch, computed ``batch_size`` inputs at a time in eval mode without
    gradients (the model's modes are restored, no hook is left behind).

    Args:
        model: the network; each batch is moved to its device.
        inputs: Tensor[N, C, H, W] (any Tensor[N, ...] the model takes).
        layer: ``None`` for the input of the final classifier, i.e. the output of the
            second-to-last layer: the input of the model's last ``nn.Linear`` (``model.head[-1]``
            for the reference models); or a module or dotted name, whose output is taken.
            The layer must run once per forward pass.
        batch_size: inputs per forward pass.

    Returns:
        Tensor[N, D] on the device of ``inputs``: each input's vector, flattened.
    """
    _positive("features", "batch_size", batch_size)
    if not isinstance(inputs, Tensor) or inputs.dim() == 0:
        raise ValueError("features: inputs must be a Tensor[N, ...] batch")
    if layer is None:
        modules = dict([_classifier(model)])
    else:
        modules = resolve_all("features", model, [layer])
    ((name, _),) = modules.items()
    device = model_device(model, inputs.device)
    rows = []
    with inference(model), capturing(modules, inputs=layer is None) as captured:
        for batch in inputs.split(batch_size) if len(inputs) else [inputs]:
            captured[name].clear()
            model(batch.to(device))
            out = only_call("features", name, captured[name])
            rows.append(_rows("features", name, out, len(batch)).to(inputs.device))
    return torch.cat(rows)


# ---------------------------------------------------------------------- nearest neighbours


def _check_vectors(fn: str, queries: Tensor, gallery: Tensor) -> torch.dtype:
    """The floating dtype to compute in (float32 at least)."""
    for arg, t in (("queries", queries), ("gallery", gallery)):
        if not isinstance(t, Tensor) or t.dim() != 2:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{fn}: {arg} must be a Tensor[{arg[0].upper()}, D], got {shape}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{fn}: {arg} contains NaN or infinite values")
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"{fn}: queries and gallery must have the same feature dimension D, got "
            f"queries {tuple(queries.shape)} and gallery {tuple(gallery.shape)}"
        )
    if queries.shape[1] == 0:
        raise ValueError(f"{fn}: feature vectors must have D >= 1, got D = 0")
    dtype = torch.promote_types(queries.dtype, gallery.dtype)
    return dtype if dtype.is_floating_point and dtype.itemsize >= 4 else torch.float32


def _tiles(
    n_queries: int, n_gallery: int, chunk_size: int | None, max_memory: int, pair_bytes: int
) -> tuple[int, int]:
    """``(queries, gallery vectors)`` per step, so that a step's temporaries (about
    ``pair_bytes`` per query-gallery pair) stay within ``max_memory`` bytes."""
    pairs = max(1, max_memory // pair_bytes)
    gallery_step = chunk_size or max(1, min(n_gallery, pairs // min(n_queries, _QUERY_TILE)))
    return max(1, min(n_queries, pairs // gallery_step)), gallery_step


def _distances(queries: Tensor, gallery: Tensor, metric: str) -> Tensor:
    """Tensor[Q, D] x Tensor[G, D] -> Tensor[Q, G], each pair computed directly (no
    ``|q|^2 + |g|^2 - 2 q.g`` shortcut, so equal vectors give exactly equal distances)."""
    if metric == "l1":
        return torch.cdist(queries, gallery, p=1)
    d = torch.cdist(queries, gallery, p=2, compute_mode="donot_use_mm_for_euclid_dist")
    return d.square_().div_(queries.shape[1])


def _by_distance_then_index(dist: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Each row of ``(dist, idx)`` reordered by distance, ties by lower index."""
    idx, order = idx.sort(dim=1)
    dist, order = dist.gather(1, order).sort(dim=1, stable=True)
    return dist, idx.gather(1, order)


def _smallest(dist: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k smallest entries of each row of Tensor[Q, G], the lower index first among equal
    distances (also at the k-th place): ``(dist, idx)``, each Tensor[Q, k], ascending."""
    values, idx = dist.topk(k, dim=1, largest=False, sorted=False)
    kth = values.max(dim=1, keepdim=True).values
    # Rows where more than k entries are <= the k-th smallest: topk chose among ties freely.
    tied = (dist <= kth).sum(dim=1) > k
    if tied.any():
        rows = tied.nonzero().squeeze(1)
        sorted_dist, sorted_idx = dist[rows].sort(dim=1, stable=True)
        values[rows], idx[rows] = sorted_dist[:, :k], sorted_idx[:, :k]
    return _by_distance_then_index(values, idx)


def _nearest(
    queries: Tensor, gallery: Tensor, k: int, metric: str, step: int
) -> tuple[Tensor, Tensor]:
    """Exact k nearest of Tensor[Q, D] in Tensor[G, D], ``step`` gallery vectors at a time."""
    best = queries.new_empty(len(queries), 0)
    best_idx = torch.empty(len(queries), 0, dtype=torch.long, device=queries.device)
    for start in range(0, len(gallery), step):
        chunk = gallery[start : start + step].to(queries.device, queries.dtype)
        dist, idx = _smallest(_distances(queries, chunk, metric), min(k, len(chunk)))
        # Earlier chunks hold lower indices, so a stable sort by distance keeps index order.
        dist, order = torch.cat([best, dist], dim=1).sort(dim=1, stable=True)
        idx = torch.cat([best_idx, idx + start], dim=1).gather(1, order)
        best, best_idx = dist[:, :k], idx[:, :k]
    return best, best_idx


def nearest_neighbors(
    queries: Tensor,
    gallery: Tensor,
    k: int = 5,
    metric: str = "l1",
    *,
    chunk_size: int | None = None,
    max_memory: int = 256 * 2**20,
) -> tuple[Tensor, Tensor]:
    """The k nearest gallery vectors of each query, exactly, by L1 distance or mean squared
    error, computed tile by tile so that large galleries fit in memory.

    Args:
        queries: Tensor[Q, D].
        gallery: Tensor[G, D], on any device: it is moved to the queries' device a chunk at a
            time (a gallery kept on the CPU can be searched on a GPU).
        k: neighbours per query, 1 <= k <= G.
        metric: ``"l1"``: ``sum |q - g|``; ``"mse"``: ``mean (q - g)^2``, i.e.
            ``torch.cdist(q, g, p=2) ** 2 / D``.
        chunk_size: gallery vectors compared per step; by default sized from ``max_memory``.
        max_memory: bytes of temporaries per step (the distance tile and the selection in it,
            about ``3 x itemsize + 9`` bytes per query-gallery pair); queries are processed in
            as large tiles as it allows (at least one query).

    Returns:
        ``(dist, idx)``: Tensor[Q, k] distances (float32, or float64 for float64 inputs) and
        Tensor[Q, k] int64 gallery indices, on the queries' device, each row ascending by
        distance, equal distances in order of index.
    """
    fn = "nearest_neighbors"
    dtype = _check_vectors(fn, queries, gallery)
    if metric not in METRICS:
        raise ValueError(f"{fn}: metric must be one of {METRICS}, got {metric!r}")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= len(gallery):
        raise ValueError(
            f"{fn}: k must be an int in [1, {len(gallery)}] (the gallery size), got {k!r}"
        )
    if chunk_size is not None:
        _positive(fn, "chunk_size", chunk_size)
    _positive(fn, "max_memory", max_memory)
    queries = queries.detach().to(dtype)
    gallery = gallery.detach()
    if len(queries) == 0:
        return queries.new_empty(0, k), torch.empty(0, k, dtype=torch.long, device=queries.device)
    pair_bytes = 3 * dtype.itemsize + 9
    query_step, gallery_step = _tiles(
        len(queries), len(gallery), chunk_size, max_memory, pair_bytes
    )
    results = [_nearest(q, gallery, k, metric, gallery_step) for q in queries.split(query_step)]
    return torch.cat([d for d, _ in results]), torch.cat([i for _, i in results])


# ------------------------------------------------------------------------------ embeddings


def _pca(x: Tensor, dim: int) -> Tensor:
    """Tensor[N, D] projected on its first ``dim`` principal axes, each axis signed so that
    its largest-magnitude coefficient is positive."""
    centered = x - x.mean(dim=0)
    _, _, vh = torch.linalg.svd(centered, full_matrices=False)
    axes = vh[:dim]
    signs = axes.gather(1, axes.abs().argmax(dim=1, keepdim=True)).sign()
    return centered @ (axes * torch.where(signs == 0, 1.0, signs)).T


def _tsne_class(backend: str):
    """``(name, TSNE class)`` of the backend: openTSNE's or scikit-learn's."""
    if backend in ("auto", "opentsne"):
        try:
            from openTSNE import TSNE

            return "opentsne", TSNE
        except ImportError:
            if backend == "opentsne":
                raise ImportError(
                    "embed: backend='opentsne' needs openTSNE: pip install openTSNE"
                ) from None
    try:
        from sklearn.manifold import TSNE

        return "sklearn", TSNE
    except ImportError:
        raise ImportError(
            "embed: method='tsne' needs openTSNE or scikit-learn: "
            "pip install openTSNE, or pip install 'fastcnn[viz]'"
        ) from None


def _tsne(x: Tensor, dim: int, seed: int, backend: str = "auto", **kwargs) -> Tensor:
    if backend not in TSNE_BACKENDS:
        raise ValueError(f"embed: backend must be one of {TSNE_BACKENDS}, got {backend!r}")
    if len(x) < 4:
        raise ValueError(f"embed: t-SNE needs at least 4 points, got N = {len(x)}")
    name, TSNE = _tsne_class(backend)
    kwargs.setdefault("perplexity", min(30.0, (len(x) - 1) / 3))
    logger.debug("embed: t-SNE (%s) of %s to %d-D, %s", name, tuple(x.shape), dim, kwargs)
    model = TSNE(n_components=dim, random_state=seed, **kwargs)
    data = x.cpu().numpy()
    points = model.fit(data) if name == "opentsne" else model.fit_transform(data)
    return torch.as_tensor(np.asarray(points)).to(x.device, x.dtype)


def embed(
    features: Tensor, method: str = "pca", dim: int = 2, *, seed: int = 0, **kwargs
) -> Tensor:
    """Feature vectors mapped to 2-D or 3-D points for plotting.

    Args:
        features: Tensor[N, D].
        method: ``"pca"``: projection on the first ``dim`` principal axes, in torch on the
            tensor's device (SVD of the centered data; each axis signed so that its
            largest-magnitude coefficient is positive, so the result is deterministic). The
            columns come in order of decreasing variance. Needs ``min(N, D) >= dim``.
            ``"tsne"``: t-SNE on the CPU with openTSNE when installed, else scikit-learn
            (``backend="opentsne"`` or ``"sklearn"`` picks one); ``perplexity`` defaults to
            ``min(30, (N - 1) / 3)``; other ``kwargs`` go to the backend's ``TSNE`` (their
            names differ: openTSNE's ``n_iter``, scikit-learn's ``max_iter``). Needs N >= 4.
        dim: 2 or 3.
        seed: random state of t-SNE.

    Returns:
        Tensor[N, dim] on the device of ``features``, in its floating dtype (float32 for
        integer, float16 and bfloat16 inputs).
    """
    if not isinstance(features, Tensor) or features.dim() != 2:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"embed: features must be a Tensor[N, D], got {shape}")
    if method not in EMBEDDINGS:
        raise ValueError(f"embed: method must be one of {EMBEDDINGS}, got {method!r}")
    if dim not in (2, 3) or isinstance(dim, bool):
        raise ValueError(f"embed: dim must be 2 or 3, got {dim!r}")
    x = features.detach()
    if not x.dtype.is_floating_point or x.dtype.itemsize < 4:
        x = x.float()
    if method == "tsne":
        return _tsne(x, dim, seed, **kwargs)
    if kwargs:
        raise TypeError(f"embed: method='pca' takes no other arguments, got {sorted(kwargs)}")
    if min(x.shape) < dim:
        raise ValueError(
            f"embed: PCA to dim={dim} needs at least {dim} points of at least {dim} features, "
            f"got shape {tuple(x.shape)}"
        )
    return _pca(x, dim)


# -------------------------------------------------------------------------------- plotting


def plot_neighbors(
    query_images: Tensor,
    gallery_images: Tensor,
    idx: Tensor,
    *,
    dist: Tensor | None = None,
    ax=None,
):
    """Each query image beside its nearest gallery images, one row per query.

    Args:
        query_images: Tensor[Q, C, H, W].
        gallery_images: Tensor[G, C, H, W].
        idx: Tensor[Q, k] gallery indices, as :func:`nearest_neighbors` gives them.
        dist: Tensor[Q, k] distances to write above the neighbours (else their rank).
        ax: an Axes whose place the grid takes.

    Returns:
        The matplotlib Figure.
    """
    fn = "plot_neighbors"
    for arg, t in (("query_images", query_images), ("gallery_images", gallery_images)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            raise ValueError(f"{fn}: {arg} must be a Tensor[N, C, H, W]")
    if query_images.shape[1:] != gallery_images.shape[1:]:
        raise ValueError(
            f"{fn}: query and gallery images must have the same [C, H, W], got "
            f"{tuple(query_images.shape[1:])} and {tuple(gallery_images.shape[1:])}"
        )
    idx = _check_idx(fn, torch.as_tensor(idx).cpu(), len(query_images), len(gallery_images))
    if dist is not None and tuple(dist.shape) != tuple(idx.shape):
        raise ValueError(
            f"{fn}: dist must have idx's shape {tuple(idx.shape)}, got {tuple(dist.shape)}"
        )
    queries = query_images.detach().cpu().unsqueeze(1)
    rows = torch.cat([queries, gallery_images.detach().cpu()[idx]], dim=1)
    images = _plot.displayable(rows.flatten(0, 1))
    return _plot.grid(images, _neighbor_titles(idx, dist), ncols=idx.shape[1] + 1, ax=ax)


def _check_idx(fn: str, idx: Tensor, n_queries: int, n_gallery: int) -> Tensor:
    if idx.dim() != 2 or len(idx) != n_queries or idx.dtype.is_floating_point:
        raise ValueError(
            f"{fn}: idx must be an integer Tensor[Q, k] with Q = {n_queries}, "
            f"got {idx.dtype} {tuple(idx.shape)}"
        )
    if idx.numel() and not (int(idx.min()) >= 0 and int(idx.max()) < n_gallery):
        raise ValueError(f"{fn}: idx must index gallery_images, in [0, {n_gallery})")
    return idx


def _neighbor_titles(idx: Tensor, dist: Tensor | None) -> list[str]:
    """Titles row after row: "query", then each neighbour's distance (or its rank)."""
    if dist is None:
        return ["query", *(f"#{j + 1}" for j in range(idx.shape[1]))] * len(idx)
    return [t for row in dist.tolist() for t in ["query", *(f"{d:.3g}" for d in row)]]


def _class_names(fn: str, values: np.ndarray, classes: Sequence[str] | None) -> list[str]:
    if classes is None:
        return [str(v) for v in values]
    if not all(isinstance(v, (int, np.integer)) and 0 <= v < len(classes) for v in values):
        raise ValueError(
            f"{fn}: labels must be integers indexing classes (0 to {len(classes) - 1}), "
            f"got values {values.tolist()[:10]}"
        )
    return [str(classes[v]) for v in values]


def plot_embedding(points: Tensor, labels=None, *, classes: Sequence[str] | None = None, ax=None):
    """A scatter plot of 2-D or 3-D points (see :func:`embed`), coloured by class, with a
    legend (a colour bar instead for more than 20 classes).

    Args:
        points: Tensor[N, 2] or [N, 3]; 3-D points get 3-D Axes (``ax`` is replaced by one in
            its place unless it is 3-D already).
        labels: N class labels (Tensor, array or sequence), or None for one colour.
        classes: names of the classes, indexed by integer label.

    Returns:
        The matplotlib Figure.
    """
    fn = "plot_embedding"
    if not isinstance(points, Tensor) or points.dim() != 2 or points.shape[1] not in (2, 3):
        shape = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise ValueError(f"{fn}: points must be a Tensor[N, 2] or [N, 3], got {shape}")
    if labels is not None:
        labels = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels)
        if labels.shape != (points.shape[0],):
            raise ValueError(
                f"{fn}: labels must have one entry per point, shape ({points.shape[0]},), "
                f"got shape {labels.shape}"
            )
        names = _class_names(fn, np.unique(labels), classes)
    xyz = points.detach().float().cpu().numpy().T
    projection = "3d" if len(xyz) == 3 else None
    if ax is None or (projection and ax.name != "3d"):
        _, (ax,) = _plot.subplots(ax, figsize=(5.5, 4.5), projection=projection)
    if labels is None:
        ax.scatter(*xyz, s=8)
    else:
        _scatter_classes(ax, xyz, labels, names)
    return ax.figure


def _scatter_classes(ax, xyz: np.ndarray, labels: np.ndarray, names: list[str]) -> None:
    """Points [2 or 3, N] coloured by label: a legend of ``names`` (one per sorted label value)
    for up to 20 classes, else a colour bar."""
    values = np.unique(labels)
    if len(values) > 20:
        codes = np.searchsorted(values, labels)
        ax.figure.colorbar(ax.scatter(*xyz, c=codes, s=8, cmap="viridis"), ax=ax, label="class")
        return
    from matplotlib import colormaps

    colors = colormaps["tab10" if len(values) <= 10 else "tab20"]
    for i, (value, name) in enumerate(zip(values, names)):
        ax.scatter(*xyz[:, labels == value], s=8, color=colors(i), label=name)
    ax.legend(fontsize=7, markerscale=2, loc="best")
