"""fastcnn.train: learning, history, checkpoints (atomic, exact resume, errors), schedules,
early stopping, the 2-process DDP run, and the train/demo commands."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fastcnn
import fastcnn.cli
from fastcnn.train import checkpoint as ckpt

sys.path.insert(0, str(Path(__file__).parent))
from _train_fixtures import tiny_data, tiny_model  # noqa: E402

FIT = dict(batch_size=16, lr=0.1, progress=False, device="cpu")


def test_fit_learns_and_records_history():
    model = tiny_model(normalize=True)
    data, val = tiny_data(), tiny_data(seed=1)
    history = fastcnn.train.fit(model, data, val, epochs=4, **FIT)
    assert history.epoch == [1, 2, 3, 4]
    assert len(history.step_loss) == 4 * 4
    assert history.loss[-1] < history.loss[0]
    assert fastcnn.train.evaluate(model, val)["accuracy"] == 1.0
    assert not math.isnan(history.val_loss[-1])
    norm = model[0]
    assert bool(norm.fitted) and abs(float(norm.mean) - float(data.tensors[0].mean())) < 1e-6


def test_normalize_requires_a_normalize_layer():
    with pytest.raises(ValueError, match="normalize=True needs a fastcnn.data.Normalize"):
        fastcnn.train.fit(tiny_model(), tiny_data(), epochs=1, **FIT)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(epochs=0), "epochs must be an int >= 1"),
        (dict(epochs=1, amp="fp8"), "amp must be None"),
        (dict(epochs=1, amp="bf16"), "needs a CUDA device"),
        (dict(epochs=1, resume=True), "resume=True needs checkpoint="),
        (dict(epochs=1, scheduler="linear"), "scheduler must be one of"),
    ],
)
def test_fit_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fastcnn.train.fit(tiny_model(), tiny_data(), normalize=False, **{**FIT, **kwargs})


def test_fit_rejects_non_dataset():
    with pytest.raises(TypeError, match="train must be a torch Dataset"):
        fastcnn.train.fit(tiny_model(), [1, 2, 3], epochs=1, normalize=False, **FIT)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("interrupt_at", [5, 8])  # mid-epoch, and right at an epoch's end
def test_interrupted_then_resumed_run_ends_with_identical_weights(tmp_path, interrupt_at):
    kwargs = dict(epochs=3, scheduler="onecycle", **FIT)
    reference = tiny_model(normalize=True)
    fastcnn.train.fit(reference, tiny_data(), tiny_data(seed=1), **kwargs)

    def send_ctrl_c(step):
        if step.global_step == interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)

    model = tiny_model(normalize=True)
    with pytest.raises(KeyboardInterrupt):
        fastcnn.train.fit(
            model,
            tiny_data(),
            tiny_data(seed=1),
            checkpoint=tmp_path,
            on_step=send_ctrl_c,
            **kwargs,
        )
    state = ckpt.load(tmp_path / "last.pt")
    assert (state["epoch"], state["step"]) == divmod(interrupt_at + 1, 4)

    torch.manual_seed(1234)  # the resumed run must not depend on the RNG it starts with
    resumed = tiny_model(seed=99, normalize=True)  # different initial weights, restored
    history = fastcnn.train.fit(
        resumed, tiny_data(), tiny_data(seed=1), checkpoint=tmp_path, resume=True, **kwargs
    )
    assert history.epoch == [1, 2, 3]
    want, got = _weights(reference), _weights(resumed)
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key


def test_checkpoints_hold_everything_and_best_tracks_validation(tmp_path):
    model = tiny_model(normalize=True)
    history = fastcnn.train.fit(
        model,
        tiny_data(),
        tiny_data(seed=1),
        epochs=2,
        checkpoint=tmp_path,
        meta={"model": "tiny"},
        **FIT,
    )
    last = ckpt.load(tmp_path / "last.pt")
    for key in ("model", "optimizer", "scheduler", "history", "rng", "config", "meta"):
        assert key in last
    assert last["epoch"] == 2 and last["meta"] == {"model": "tiny"}
    assert "0.mean" in last["model"] and bool(last["model"]["0.fitted"])
    assert last["history"]["loss"] == history.loss
    best = ckpt.load(tmp_path / "best.pt")
    assert best["best"]["val_accuracy"] == max(history.val_accuracy)


def test_a_crash_mid_write_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save({"value": 1}, path)
    good = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save({"value": 2}, path)
    assert path.read_bytes() == good
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    monkeypatch.undo()
    assert ckpt.load(path)["value"] == 1


def test_truncated_corrupt_and_foreign_checkpoints_raise(tmp_path):
    path = tmp_path / "c.pt"
    ckpt.save({"value": 1}, path)
    data = path.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pt").write_bytes(b"\x00not a checkpoint" * 10)
    torch.save({"model": {}}, tmp_path / "foreign.pt")
    for name in ("truncated.pt", "garbage.pt"):
        with pytest.raises(ValueError, match="truncated or corrupt"):
            ckpt.load(tmp_path / name)
    with pytest.raises(ValueError, match="not a fastcnn checkpoint"):
        ckpt.load(tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError, match="no file at"):
        ckpt.load(tmp_path / "missing.pt")


def test_resuming_into_a_different_model_or_settings_raises(tmp_path):
    fastcnn.train.fit(
        tiny_model(), tiny_data(), epochs=1, checkpoint=tmp_path, normalize=False, **FIT
    )
    wider = torch.nn.Sequential(
        fastcnn.nn.Conv2d(1, 5, 3), fastcnn.nn.GlobalAvgPool2d(), torch.nn.Linear(5, 2)
    )
    with pytest.raises(ValueError, match="does not fit this model.*missing"):
        fastcnn.train.fit(
            wider, tiny_data(), epochs=2, checkpoint=tmp_path, resume=True, normalize=False, **FIT
        )
    with pytest.raises(ValueError, match="batch_size=16, this run has batch_size=8"):
        fastcnn.train.fit(
            tiny_model(),
            tiny_data(),
            epochs=2,
            checkpoint=tmp_path,
            resume=True,
            normalize=False,
            **{**FIT, "batch_size": 8},
        )


@pytest.mark.parametrize("name", ["constant", "step", "cosine", "onecycle"])
def test_schedules_shape_the_learning_rate(name):
    seen = []
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = fastcnn.train.schedules.make(name, opt, total_steps=100)
    for _ in range(100):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    if name == "constant":
        assert seen == [0.1] * 100
    elif name == "step":
        assert seen[0] == seen[49] == 0.1 and abs(seen[50] - 0.01) < 1e-12
        assert abs(seen[99] - 0.001) < 1e-12
    elif name == "cosine":
        assert seen[0] == 0.1 and seen[50] == pytest.approx(0.05) and seen[99] < 1e-3
    else:
        peak = max(range(100), key=seen.__getitem__)
        assert 20 <= peak <= 40 and seen[peak] == pytest.approx(0.1) and seen[-1] < 1e-3


def test_early_stopping_stops(tmp_path):
    history = fastcnn.train.fit(
        tiny_model(),
        tiny_data(),
        tiny_data(seed=1),
        epochs=30,
        early_stopping=1,
        lr=0.0,
        normalize=False,
        **{k: v for k, v in FIT.items() if k != "lr"},
    )
    assert len(history.epoch) < 30


def test_history_plot_draws_curves(tmp_path):
    pytest.importorskip("matplotlib")
    history = fastcnn.train.fit(
        tiny_model(), tiny_data(), tiny_data(seed=1), epochs=2, normalize=False, **FIT
    )
    fig = history.plot()
    path = tmp_path / "curves.png"
    fig.savefig(path)
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert pixels.std() > 10  # not a blank canvas
    assert len(fig.axes) == 2


def test_two_process_ddp_matches_single_process_on_the_same_global_batch(tmp_path):
    reference = tiny_model()
    fastcnn.train.fit(reference, tiny_data(), epochs=2, normalize=False, **FIT)
    worker = Path(__file__).parent / "_ddp_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(worker),
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    want = reference.state_dict()
    for key in want:
        assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], want[key], rtol=1e-5, atol=1e-6)


def test_train_command_writes_checkpoints_curves_and_metrics(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "run"
    code = fastcnn.cli.main(
        [
            "train",
            "--data",
            "digits",
            "--model",
            "digits",
            "--epochs",
            "1",
            "--width",
            "8",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    for name in ("last.pt", "best.pt", "curves.png", "metrics.json"):
        assert (out / name).is_file(), name
    meta = ckpt.load(out / "last.pt")["meta"]
    assert meta["model"] == "digits" and meta["classes"] == [str(i) for i in range(10)]
    model, meta = fastcnn.train.load_model(out / "best.pt")
    data = fastcnn.data.digits()
    accuracy = fastcnn.train.evaluate(model, data.test)["accuracy"]
    assert accuracy == pytest.approx(
        json.loads((out / "metrics.json").read_text())["test_accuracy"]
    )


def test_load_model_needs_meta(tmp_path):
    ckpt.save({"model": {}}, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="does not say which model"):
        fastcnn.train.load_model(tmp_path / "bare.pt")
