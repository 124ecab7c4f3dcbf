"""fastcnn.data: the loaders, the stratified split, ImageData and Normalize.

Every dataset file is written by the tests themselves (no network); scikit-learn and Pillow
come with the test extra and are skipped where absent.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset

from fastcnn import data
from fastcnn.data import ImageData, Normalize

SPLITS = ("train", "val", "test")


def _splits(d: ImageData) -> dict[str, TensorDataset]:
    return {name: getattr(d, name) for name in SPLITS if getattr(d, name) is not None}


def _indexed(n: int, labels: torch.Tensor, classes=None, **kwargs) -> ImageData:
    """A dataset whose image i is filled with i/255 (n <= 256), to trace the split."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2)
    return data.from_tensors(images.contiguous(), labels, classes=classes, **kwargs)


def _indices(split: TensorDataset) -> list[int]:
    return torch.round(split.tensors[0][:, 0, 0, 0] * 255).long().tolist()


# --------------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def sk_digits():
    datasets = pytest.importorskip("sklearn.datasets")
    return datasets.load_digits()


@pytest.fixture(scope="module")
def digits32(sk_digits) -> ImageData:
    return data.digits()


def test_digits_shapes_range_classes(digits32):
    d = digits32
    assert d.classes == [str(i) for i in range(10)]
    assert (d.in_channels, d.image_size, d.num_classes) == (1, (32, 32), 10)
    assert sum(len(s) for s in _splits(d).values()) == 1797
    assert [len(d.train), len(d.val), len(d.test)] == pytest.approx(
        [0.7 * 1797, 0.15 * 1797, 0.15 * 1797], abs=10
    )
    for split in _splits(d).values():
        images, labels = split.tensors
        assert images.dtype == torch.float32 and images.shape[1:] == (1, 32, 32)
        assert images.min() >= 0 and images.max() <= 1 and images.max() > 0.9
        assert labels.dtype == torch.int64 and set(labels.tolist()) == set(range(10))
    image, label = d.train[0]
    assert image.shape == (1, 32, 32) and label.dim() == 0 and label.dtype == torch.int64


@pytest.mark.parametrize("size", [8, 16, 4])
def test_digits_splits_partition_the_resized_images(sk_digits, size):
    d = data.digits(size)
    every = torch.from_numpy(sk_digits.images / 16).float().unsqueeze(1)
    if size != 8:
        every = F.interpolate(
            every, size=(size, size), mode="bilinear", align_corners=False, antialias=size < 8
        )
    expected = Counter((x.numpy().tobytes(), int(y)) for x, y in zip(every, sk_digits.target))
    got = Counter(
        (x.numpy().tobytes(), int(y)) for s in _splits(d).values() for x, y in zip(*s.tensors)
    )
    assert got == expected  # every image in exactly one split, with its label


def test_digits_deterministic_and_seeded(sk_digits):
    a, b, c = data.digits(8), data.digits(8), data.digits(8, seed=1)
    for name in SPLITS:
        for x, y in zip(getattr(a, name).tensors, getattr(b, name).tensors):
            assert torch.equal(x, y)
    assert not torch.equal(a.test.tensors[0], c.test.tensors[0])


def test_digits_stratified(digits32, sk_digits):
    per_class = np.bincount(sk_digits.target)
    for name, fraction in zip(SPLITS, (0.7, 0.15, 0.15)):
        counts = np.bincount(getattr(digits32, name).tensors[1].numpy(), minlength=10)
        assert np.all(np.abs(counts - fraction * per_class) <= 1), (name, counts)


def test_digits_errors(sk_digits, monkeypatch):
    with pytest.raises(ValueError, match=r"digits: size must be an int >= 1, got 0"):
        data.digits(0)
    with pytest.raises(ValueError, match=r"digits: size must be an int >= 1, got '8'"):
        data.digits("8")
    with pytest.raises(ValueError, match=r"digits: split must be 3 fractions"):
        data.digits(split=(0.7, 0.3))
    with pytest.raises(ValueError, match=r"digits: seed must be an int in \[0, 2\*\*32\)"):
        data.digits(seed=-1)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"needs scikit-learn.*pip install scikit-learn"):
        data.digits()


# ------------------------------------------------------------------------ split (shared)


def test_split_partitions_and_keeps_labels():
    n = 200
    labels = torch.arange(n) % 4
    d = _indexed(n, labels, split=(0.6, 0.2, 0.2), seed=3)
    seen = {name: _indices(s) for name, s in _splits(d).items()}
    assert sorted(sum(seen.values(), [])) == list(range(n))  # disjoint and complete
    for name, split in _splits(d).items():
        assert seen[name] == sorted(seen[name])  # original order kept
        assert split.tensors[1].tolist() == [i % 4 for i in seen[name]]
        assert torch.bincount(split.tensors[1]).tolist() == [len(split) // 4] * 4
    assert [len(d.train), len(d.val), len(d.test)] == [120, 40, 40]


def test_split_zero_fraction_drops_the_split():
    labels = torch.arange(40) % 4
    d = _indexed(40, labels, split=(1, 0, 0))
    assert d.val is None and d.test is None and len(d.train) == 40
    d = _indexed(40, labels, split=(0.5, 0.5, 0.0))
    assert d.test is None and len(d.val) == 20


def test_split_puts_every_class_in_every_split():
    labels = torch.tensor([0] * 3 + [1] * 97)  # class 0 would round to 0 in val and test
    d = _indexed(100, labels, split=(0.8, 0.1, 0.1))
    for split in _splits(d).values():
        assert set(split.tensors[1].tolist()) == {0, 1}


@pytest.mark.parametrize(
    ("split", "match"),
    [
        ((0.5, 0.5, 0.5), r"split must be 3 fractions .* got \(0.5, 0.5, 0.5\) \(sum 1.5\)"),
        ((1.2, -0.1, -0.1), r"split must be 3 fractions \(train, val, test\), each >= 0"),
        ((0.5, 0.5), r"split must be 3 fractions .* got \(0.5, 0.5\)"),
        ((0.0, 0.5, 0.5), r"split must be .*with train > 0"),
        ((0.8, float("nan"), 0.2), r"split must be 3 fractions"),
        ("abc", r"split must be 3 fractions"),
        (
            (0.9, 0.05, 0.05),
            r"split makes the val split 0.05 of 40 images = 2, too small to hold one image of "
            r"each of the 4 classes",
        ),
    ],
)
def test_split_errors(split, match):
    with pytest.raises(ValueError, match=match):
        _indexed(40, torch.arange(40) % 4, split=split)


def test_split_accepts_numpy_numbers_and_warns_of_empty_classes(caplog):
    labels = torch.arange(40) % 4
    a = _indexed(40, labels, split=np.array([0.5, 0.25, 0.25]), seed=np.int64(7))
    b = _indexed(40, labels, split=(np.float32(0.5), 0.25, 0.25), seed=7)
    assert _indices(a.val) == _indices(b.val)
    with caplog.at_level("WARNING", logger="fastcnn.data"):
        d = _indexed(40, labels, classes=list("abcde"))
    assert d.num_classes == 5 and "no images of classes ['e']" in caplog.text


def test_split_error_class_too_small():
    labels = torch.tensor([0] * 2 + [1] * 38)
    with pytest.raises(ValueError, match=r"class '0' has 2 image\(s\), too few .* the 3 splits"):
        _indexed(40, labels, split=(0.8, 0.1, 0.1))


# --------------------------------------------------------------- from_tensors / from_arrays


def test_from_tensors_float_uint8_and_3d():
    x = torch.rand(30, 3, 5, 4, dtype=torch.float64)
    labels = torch.arange(30) % 3
    d = data.from_tensors(x, labels, classes=["a", "b", "c"], split=(1, 0, 0))
    assert d.classes == ["a", "b", "c"] and (d.in_channels, d.image_size) == (3, (5, 4))
    assert torch.equal(d.train.tensors[0], x.float()) and torch.equal(d.train.tensors[1], labels)
    u = torch.randint(0, 256, (30, 6, 7), dtype=torch.uint8)
    d = data.from_tensors(u, labels.int(), split=(1, 0, 0))
    assert d.classes == ["0", "1", "2"] and d.train.tensors[1].dtype == torch.int64
    assert torch.equal(d.train.tensors[0], u.unsqueeze(1).float() / 255)


@pytest.mark.parametrize(
    ("images", "labels", "kwargs", "error", "match"),
    [
        ([[0.0]], torch.zeros(1), {}, TypeError, r"images must be a Tensor, got list"),
        (torch.zeros(4, 1, 2, 2, dtype=torch.int32), torch.zeros(4), {}, TypeError,
         r"images must be uint8 \(0..255\) or floating point \(0..1\), got torch.int32"),
        (torch.zeros(4, 4), torch.zeros(4), {}, ValueError,
         r"images must be 4-D \[N, C, H, W\] or 3-D \[N, H, W\], got shape \(4, 4\)"),
        (torch.full((4, 1, 2, 2), 2.0), torch.zeros(4), {}, ValueError,
         r"floating-point images must be in \[0, 1\], got values in \[2, 2\]"),
        (torch.full((4, 1, 2, 2), float("nan")), torch.zeros(4), {}, ValueError,
         r"floating-point images must be in \[0, 1\], got values in \[nan, nan\]"),
        (torch.zeros(4, 1, 2, 2), [0, 1, 0, 1], {}, TypeError,
         r"labels must be a Tensor, got list"),
        (torch.zeros(4, 1, 2, 2), torch.zeros(4), {}, TypeError,
         r"labels must be an integer tensor, got torch.float32"),
        (torch.zeros(4, 1, 2, 2), torch.zeros(2, 2, dtype=torch.long), {}, ValueError,
         r"labels must be 1-D \[N\], got shape \(2, 2\)"),
        (torch.zeros(10, 1, 2, 2), torch.zeros(9, dtype=torch.long), {}, ValueError,
         r"labels must hold one label per image \(10\), got 9"),
        (torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 2, 3]), {"classes": ["a", "b", "c"]},
         ValueError, r"labels must be in \[0, 3\) \(one per class\), got values in \[0, 3\]"),
        (torch.zeros(4, 1, 2, 2), torch.tensor([-1, 0, 1, 1]), {}, ValueError,
         r"labels must be in \[0, 2\) .* got values in \[-1, 1\]"),
        (torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 0, 1]), {"classes": "ab"}, TypeError,
         r"classes must be a sequence of str, got str"),
        (torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 0, 1]), {"classes": ["a", 1]}, TypeError,
         r"classes must be a sequence of str, got an item 1"),
        (torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 0, 1]), {"classes": ["a", "a"]},
         ValueError, r"classes must be distinct, got repeated names \['a'\]"),
        (torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.long), {}, ValueError,
         r"there are no images to split"),
    ],
)  # fmt: skip
def test_from_tensors_errors(images, labels, kwargs, error, match):
    with pytest.raises(error, match="from_tensors: " + match):
        data.from_tensors(images, labels, **kwargs)


def test_from_arrays_layouts():
    rng = np.random.default_rng(0)
    labels = np.arange(20) % 2
    nhwc = rng.integers(0, 256, (20, 5, 4, 3), dtype=np.uint8)
    d = data.from_arrays(nhwc, labels, split=(1, 0, 0))
    assert d.in_channels == 3 and d.image_size == (5, 4)
    expected = torch.from_numpy(nhwc.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    assert torch.equal(d.train.tensors[0], expected)
    nchw = rng.random((20, 3, 4, 3))  # last dim 3 but second too: NCHW
    d = data.from_arrays(nchw, labels.astype(np.uint8), split=(1, 0, 0))
    assert torch.equal(d.train.tensors[0], torch.from_numpy(nchw).float())
    gray = rng.random((20, 6, 6), dtype=np.float32)
    gray.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = data.from_arrays(gray, list(labels), classes=["x", "y"], split=(0.5, 0.5, 0))
    assert d.in_channels == 1 and d.classes == ["x", "y"] and len(d.val) == 10


@pytest.mark.parametrize(
    ("images", "labels", "error", "match"),
    [
        (torch.zeros(4, 1, 2, 2), np.zeros(4, int), TypeError,
         r"from_arrays: images must be a numpy.ndarray, got Tensor"),
        (np.zeros((4, 1, 2, 2), np.int32), np.zeros(4, int), TypeError,
         r"from_arrays: images must be uint8 \(0..255\) or floating point \(0..1\), got int32"),
        (np.zeros((4, 1, 2, 2)), np.zeros(4), TypeError,
         r"from_arrays: labels must be an integer array, got float64"),
        (np.zeros((4, 2, 2)), np.zeros(3, int), ValueError,
         r"from_arrays: labels must hold one label per image \(4\), got 3"),
        (np.zeros((4, 1, 2, 2, 1)), np.zeros(4, int), ValueError,
         r"from_arrays: images must be 4-D \[N, C, H, W\] or 3-D"),
    ],
)  # fmt: skip
def test_from_arrays_errors(images, labels, error, match):
    with pytest.raises(error, match=match):
        data.from_arrays(images, labels)


# --------------------------------------------------------------------------- image_folder


def _write_folder(root: Path, classes=("cat", "dog", "eel"), per_class=4, size=(6, 5)):
    """PNGs root/<class>/<i>.png of size (H, W); returns their uint8 [H, W, 3] pixels in
    the order the loader reads them (sorted classes, sorted files)."""
    image_mod = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    written = []
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            image_mod.fromarray(pixels).save(root / name / f"{i}.png")
            written.append(pixels)
    return written


def test_image_folder_color(tmp_path):
    written = _write_folder(tmp_path)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "dog" / "Thumbs.db").write_bytes(b"\0\1")
    (tmp_path / ".cache").mkdir()  # hidden: not a class
    d = data.image_folder(tmp_path, split=(1, 0, 0))
    assert d.classes == ["cat", "dog", "eel"] and len(d.train) == 12
    assert (d.in_channels, d.image_size) == (3, (6, 5))
    expected = torch.from_numpy(np.stack(written)).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(d.train.tensors[0], expected)
    assert d.train.tensors[1].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    d = data.image_folder(tmp_path, split=(0.5, 0.25, 0.25))
    assert [len(s) for s in _splits(d).values()] == [6, 3, 3]


def test_image_folder_grayscale_and_resize(tmp_path):
    image_mod = pytest.importorskip("PIL.Image")
    written = _write_folder(tmp_path, classes=("a", "b"), per_class=2)
    d = data.image_folder(tmp_path, grayscale=True, split=(1, 0, 0))
    assert (d.in_channels, d.image_size) == (1, (6, 5))
    gray = np.array(image_mod.fromarray(written[0]).convert("L"))
    assert torch.equal(d.train.tensors[0][0, 0], torch.from_numpy(gray).float() / 255)
    assert data.image_folder(tmp_path, size=8, split=(1, 0, 0)).image_size == (8, 8)
    d = data.image_folder(tmp_path, size=(7, 9), grayscale=True, split=(1, 0, 0))
    assert (d.in_channels, d.image_size) == (1, (7, 9))


def test_image_folder_sizes_must_match_unless_resized(tmp_path):
    image_mod = pytest.importorskip("PIL.Image")
    _write_folder(tmp_path, classes=("a", "b"), per_class=2)
    image_mod.new("RGB", (4, 3)).save(tmp_path / "b" / "odd.png")
    with pytest.raises(ValueError, match=r"share a size .*odd.png is 3x4 \(HxW\) but .*0.png"):
        data.image_folder(tmp_path, split=(1, 0, 0))
    assert data.image_folder(tmp_path, size=4, split=(1, 0, 0)).image_size == (4, 4)


def test_image_folder_errors(tmp_path, monkeypatch):
    _write_folder(tmp_path / "ok", classes=("a", "b"), per_class=2)
    (tmp_path / "ok" / "c").mkdir()
    (tmp_path / "ok" / "c" / "readme.md").write_text("x")
    with pytest.raises(ValueError, match=r"image_folder: class folder .*c holds no images"):
        data.image_folder(tmp_path / "ok")
    _write_folder(tmp_path / "one", classes=("a",), per_class=2)
    with pytest.raises(ValueError, match=r"at least 2 class sub-folders, got 1 \('a'\)"):
        data.image_folder(tmp_path / "one")
    _write_folder(tmp_path / "bad", classes=("a", "b"), per_class=2)
    (tmp_path / "bad" / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"image_folder: cannot read image .*broken.png"):
        data.image_folder(tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match=r"path must be an existing folder, got"):
        data.image_folder(tmp_path / "missing")
    with pytest.raises(TypeError, match=r"size must be an int or a pair \(height, width\)"):
        data.image_folder(tmp_path / "ok", size=(1, 2, 3))
    with pytest.raises(ValueError, match=r"image_folder: size must be >= 1, got \(0, 4\)"):
        data.image_folder(tmp_path / "ok", size=(0, 4))
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"needs Pillow .*pip install pillow"):
        data.image_folder(tmp_path / "bad")


# ---------------------------------------------------------------------------------- mnist


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(f">I{array.ndim}I", 0x0800 | array.ndim, *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_mnist(root: Path, n_train=50, n_test=20, gz=False, dotted=False) -> dict:
    """MNIST files whose image i has pixel (0, 0) = i and label i % 10."""
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        images = np.random.default_rng(n).integers(0, 256, (n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = np.arange(n)
        arrays[f"{part}-images-idx3-ubyte"] = images
        arrays[f"{part}-labels-idx1-ubyte"] = np.arange(n) % 10
    for name, array in arrays.items():
        name = ".".join(name.rsplit("-", 1)) if dotted else name
        raw = _idx(array)
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (root / name).write_bytes(raw)
    return arrays


@pytest.mark.parametrize(("gz", "dotted"), [(False, False), (True, False), (False, True)])
def test_mnist(tmp_path, gz, dotted):
    arrays = _write_mnist(tmp_path, gz=gz, dotted=dotted)
    d = data.mnist(tmp_path, val_fraction=0.2)
    assert d.classes == [str(i) for i in range(10)]
    assert (d.in_channels, d.image_size) == (1, (28, 28))
    assert [len(d.train), len(d.val), len(d.test)] == [40, 10, 20]
    test_images = torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).unsqueeze(1).float() / 255
    assert torch.equal(d.test.tensors[0], test_images)  # the official test set, in order
    assert d.test.tensors[1].tolist() == [i % 10 for i in range(20)]
    train_ids = sorted(_indices(d.train) + _indices(d.val))
    assert train_ids == list(range(50))
    assert set(d.val.tensors[1].tolist()) == set(range(10))
    assert data.mnist(tmp_path, val_fraction=0).val is None


def test_mnist_errors(tmp_path):
    good = tmp_path / "good"
    _write_mnist(good)
    labels = (good / "train-labels-idx1-ubyte").read_bytes()
    images = (good / "train-images-idx3-ubyte").read_bytes()

    def broken(name: str, raw: bytes, *, gz: bool = False) -> Path:
        folder = tmp_path / f"broken{len(list(tmp_path.iterdir()))}"
        _write_mnist(folder)
        (folder / name).unlink()
        (folder / (name + ".gz" if gz else name)).write_bytes(raw)
        return folder

    cases = [
        (broken("train-images-idx3-ubyte", images[:-100]),
         r"mnist: .*train-images-idx3-ubyte is truncated or corrupt: its header gives shape "
         r"\(50, 28, 28\), 39200 bytes of data, but it holds 39100"),
        (broken("train-images-idx3-ubyte", images[:10]),
         r"train-images-idx3-ubyte is truncated or not an IDX file: 10 bytes"),
        (broken("train-labels-idx1-ubyte", images),
         r"train-labels-idx1-ubyte has magic number 0x00000803, expected 0x00000801"),
        (broken("train-labels-idx1-ubyte", gzip.compress(labels)[:-8], gz=True),
         r"train-labels-idx1-ubyte.gz is not a valid gzip file"),
        (broken("train-labels-idx1-ubyte", _idx(np.arange(49) % 10)),
         r"labels of .*train-labels-idx1-ubyte .* must hold one label per image \(50\), got 49"),
        (broken("t10k-labels-idx1-ubyte", _idx(np.arange(20))),
         r"labels of .*t10k-labels-idx1-ubyte .* must be in \[0, 10\) .* got values in \[0, 19\]"),
        (broken("t10k-images-idx3-ubyte", _idx(np.zeros((20, 14, 14)))),
         r"training and test images must share a size, got \(28, 28\) and \(14, 14\)"),
    ]  # fmt: skip
    for folder, match in cases:
        with pytest.raises(ValueError, match=match):
            data.mnist(folder)
    (good / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks t10k-labels-idx1-ubyte \(plain or .gz\)"):
        data.mnist(good)
    with pytest.raises(FileNotFoundError, match=r"mnist: path must be an existing folder"):
        data.mnist(tmp_path / "nothing")
    with pytest.raises(ValueError, match=r"mnist: val_fraction must be a number in \[0, 1\)"):
        data.mnist(tmp_path / "nothing", val_fraction=1.0)


# -------------------------------------------------------------------------------- cifar10

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship"]
CIFAR_NAMES += ["truck"]


def _write_cifar(root: Path, per_batch=10, protocol=2) -> dict[str, np.ndarray]:
    """CIFAR-10 batches like the official ones (bytes keys) with image i of each batch
    having pixel (0, 0, 0) = i and label i % 10; returns the data arrays by file."""
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for b, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        rows = np.random.default_rng(b).integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        rows[:, 0] = np.arange(per_batch) + b * per_batch
        batch = {b"data": rows, b"labels": [i % 10 for i in range(per_batch)]}
        (root / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        written[name] = rows
    meta = {b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_vis": 3072}
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return written


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL, "numpy1"])
def test_cifar10(tmp_path, protocol):
    written = _write_cifar(tmp_path, protocol=2 if protocol == "numpy1" else protocol)
    if protocol == "numpy1":  # the module name NumPy 1.x (and the official files) use
        for file in tmp_path.iterdir():
            raw = file.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            file.write_bytes(raw)
    d = data.cifar10(tmp_path, val_fraction=0.2)
    assert d.classes == CIFAR_NAMES
    assert (d.in_channels, d.image_size) == (3, (32, 32))
    assert [len(d.train), len(d.val), len(d.test)] == [40, 10, 10]
    rows = written["test_batch"]
    expected = torch.from_numpy(rows.reshape(10, 3, 32, 32)).float() / 255
    assert torch.equal(d.test.tensors[0], expected)  # planes R, G, B, each row-major
    green = d.test.tensors[0][3, 1, 0, 5]  # image 3, channel G, pixel (0, 5)
    assert round(float(green) * 255) == rows[3, 1024 + 5]
    assert sorted(_indices(d.train) + _indices(d.val)) == list(range(50))
    assert data.cifar10(tmp_path, val_fraction=0).val is None


class _Evil:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (str(self.target),))


def test_cifar10_errors(tmp_path):
    def broken(name: str, obj=None, raw: bytes | None = None) -> Path:
        folder = tmp_path / f"broken{len(list(tmp_path.iterdir()))}"
        _write_cifar(folder)
        (folder / name).write_bytes(raw if raw is not None else pickle.dumps(obj, protocol=2))
        return folder

    good = (tmp_path / "good") / "x"
    _write_cifar(good)
    batch = (good / "data_batch_3").read_bytes()
    rows = np.zeros((10, 3072), np.uint8)
    cases = [
        (broken("data_batch_3", raw=batch[: len(batch) // 2]),
         r"cifar10: .*data_batch_3 is not a readable CIFAR-10 batch \(truncated or corrupt\)"),
        (broken("data_batch_3", {b"data": _Evil(tmp_path / "pwned")}),
         r"data_batch_3 is not a readable .* refusing global posix.mkdir"),
        (broken("data_batch_3", [1, 2]), r"data_batch_3 must hold a dict, got list"),
        (broken("data_batch_2", {b"labels": [0] * 10}),
         r"data_batch_2 must have the key 'data', got keys \['labels'\]"),
        (broken("test_batch", {b"data": rows[:, :100], b"labels": [0] * 10}),
         r"data in .*test_batch must be \[N, 3072\], got \(10, 100\)"),
        (broken("test_batch", {b"data": rows.astype(np.float32), b"labels": [0] * 10}),
         r"data in .*test_batch must be uint8 \[N, 3072\], got float32 shape \(10, 3072\)"),
        (broken("test_batch", {b"data": rows, b"labels": [0] * 9}),
         r"labels in .*test_batch must hold one label per image \(10\), got 9"),
        (broken("data_batch_1", {b"data": rows, b"labels": [10] * 10}),
         r"labels in .*data_batch_1 must be in \[0, 10\) .* got values in \[10, 10\]"),
        (broken("data_batch_1", {b"data": rows, b"labels": ["a"] * 10}),
         r"labels in .*data_batch_1 must be a list of ints"),
        (broken("batches.meta", {b"label_names": []}),
         r"label_names in .*batches.meta must be a non-empty list"),
    ]  # fmt: skip
    if os.name != "posix":
        cases = [c for c in cases if "mkdir" not in c[1]]
    for folder, match in cases:
        with pytest.raises(ValueError, match=match):
            data.cifar10(folder)
    assert not (tmp_path / "pwned").exists()  # the tampered pickle ran nothing
    (good / "batches.meta").unlink()
    with pytest.raises(FileNotFoundError, match=r"cifar10: .*x lacks batches.meta"):
        data.cifar10(good)


# ----------------------------------------------------------------------------------- load


def test_load_dispatch(tmp_path, sk_digits):
    d = data.load("digits", size=8)
    assert d.image_size == (8, 8) and torch.equal(d.test.tensors[0], data.digits(8).test.tensors[0])
    _write_mnist(tmp_path / "m", gz=True)
    assert data.load(str(tmp_path / "m"), val_fraction=0.2).image_size == (28, 28)
    _write_cifar(tmp_path / "c")
    assert data.load(tmp_path / "c", val_fraction=0.2).classes == CIFAR_NAMES
    _write_folder(tmp_path / "f", classes=("a", "b"), per_class=4)
    d = data.load(tmp_path / "f", size=3, split=(0.5, 0.25, 0.25))
    assert d.classes == ["a", "b"] and d.image_size == (3, 3)


def test_load_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"load: spec must be 'digits', or a folder .*holds none"):
        data.load(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match=r"load: spec must be .*\(no such folder\)"):
        data.load(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match=r"load: spec must be .*\(it is a file, not a folder\)"):
        data.load(tmp_path / "empty" / "notes.txt")
    with pytest.raises(TypeError, match=r"load: spec must be a str or a path, got int"):
        data.load(3)
    _write_mnist(tmp_path / "partial")
    (tmp_path / "partial" / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"mnist: .* lacks t10k-images-idx3-ubyte"):
        data.load(tmp_path / "partial")


# --------------------------------------------------------------------- ImageData, Normalize


def test_normalization_fits_training_images():
    x = torch.rand(200, 3, 4, 4) * torch.tensor([0.2, 0.5, 1.0]).view(1, 3, 1, 1)
    d = data.from_tensors(x, torch.arange(200) % 2)
    norm = d.normalization()
    assert isinstance(norm, Normalize) and bool(norm.fitted)
    out = norm(d.train_images())
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-5, rtol=0)
    state = norm.state_dict()
    assert set(state) == {"mean", "std", "fitted"}
    restored = Normalize(3)
    restored.load_state_dict(state)
    assert bool(restored.fitted) and torch.equal(restored(x), norm(x))


def test_normalize_errors():
    with pytest.raises(ValueError, match=r"Normalize: channels must be an int >= 1, got 0"):
        Normalize(0)
    with pytest.raises(ValueError, match=r"Normalize.fit_: images must be \[N, 3, H, W\], got"):
        Normalize(3).fit_(torch.rand(4, 1, 2, 2))


def test_digits_normalization(digits32):
    out = digits32.normalization()(digits32.train_images())
    assert abs(float(out.mean())) < 1e-4 and abs(float(out.std()) - 1) < 1e-4


class _Listed(Dataset):
    def __init__(self, n: int):
        self.items = [(torch.full((2, 3, 5), i / n), torch.tensor(i % 2)) for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def test_image_data_any_dataset_and_repr():
    d = ImageData(_Listed(6), None, _Listed(2), ["a", "b"])
    assert (d.in_channels, d.image_size, d.num_classes) == (2, (3, 5), 2)
    assert d.train_images().shape == (6, 2, 3, 5)
    assert repr(d) == "ImageData(train=6, val=None, test=2, classes=2, in_channels=2, " + (
        "image_size=(3, 5))"
    )
    with pytest.raises(ValueError, match=r"ImageData: train must be a Dataset, got None"):
        ImageData(None, None, None, ["a"])
    with pytest.raises(ValueError, match=r"ImageData: classes must be a non-empty list of str"):
        ImageData(_Listed(2), None, None, [])


def test_distributed_sampler_batches():
    d = _indexed(40, torch.arange(40) % 4, split=(1, 0, 0))
    sampler = DistributedSampler(d.train, num_replicas=2, rank=1, shuffle=True, seed=0)
    batches = list(DataLoader(d.train, batch_size=8, sampler=sampler))
    assert [b[0].shape for b in batches] == [(8, 1, 2, 2), (8, 1, 2, 2), (4, 1, 2, 2)]
    assert all(b[1].dtype == torch.int64 for b in batches)
