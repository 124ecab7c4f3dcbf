"""``fastcnn viz``: every technique runs from a checkpoint written by ``fastcnn train`` and an
image file, and writes a picture that is not blank."""

from __future__ import annotations

import numpy as np
import pytest

import fastcnn
import fastcnn.cli
from fastcnn.viz.run import TECHNIQUES

pytest.importorskip("sklearn", reason="the digits data ship with scikit-learn")
Image = pytest.importorskip("PIL.Image", reason="the viz extra reads and writes images")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small digits checkpoint trained for one epoch, a digit and a second image for style."""
    root = tmp_path_factory.mktemp("viz_cli")
    args = ["--data", "digits", "--model", "digits", "--epochs", "1", "--width", "8"]
    code = fastcnn.cli.main(["train", *args, "--out", str(root), "--no-progress"])
    assert code == 0
    test = fastcnn.data.digits().test
    paths = {}
    for name, index in (("image", 0), ("style", 1)):
        pixels = (test[index][0][0].numpy() * 255).round().astype(np.uint8)
        paths[name] = root / f"{name}.png"
        Image.fromarray(pixels).save(paths[name])
    return root / "best.pt", paths["image"], paths["style"]


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_every_technique_writes_a_picture(technique, files, tmp_path, capsys):
    checkpoint, image, style = files
    out = tmp_path / f"{technique}.png"
    argv = ["viz", technique, "--checkpoint", str(checkpoint), "--image", str(image)]
    if technique == "style-transfer":
        argv += ["--style", str(style)]
    assert fastcnn.cli.main([*argv, "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    pixels = np.asarray(Image.open(out).convert("L"), dtype=np.float64)
    assert pixels.std() > 10
