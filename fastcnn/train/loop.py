"""fit() and evaluate(): SGD with momentum by default, progress bars, checkpoints with exact
resume, schedules, early stopping, mixed precision on CUDA, DistributedDataParallel."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..data.normalize import Normalize
from . import checkpoint as ckpt
from . import distributed, schedules
from .history import History
from .interrupt import deferred_sigint

log = logging.getLogger("fastcnn.train")

LAST, BEST = "last.pt", "best.pt"


@dataclass(frozen=True)
class Step:
    """What ``on_step`` callbacks receive after every optimizer step."""

    epoch: int  # 0-based
    step: int  # 0-based, within the epoch
    global_step: int
    loss: float


def _split(data, val):
    """(train Dataset, val Dataset or None) from a Dataset or a fastcnn.data.ImageData."""
    if hasattr(data, "train") and hasattr(data, "classes"):
        return data.train, val if val is not None else data.val
    if not isinstance(data, Dataset):
        raise TypeError(
            "fit: train must be a torch Dataset or a fastcnn.data.ImageData, "
            f"got {type(data).__name__}"
        )
    return data, val


def _images(data, dataset: Dataset) -> torch.Tensor:
    if hasattr(data, "train_images"):
        return data.train_images()
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def _fit_normalization(model: torch.nn.Module, data, dataset: Dataset) -> None:
    layers = [m for m in model.modules() if isinstance(m, Normalize)]
    if not layers:
        raise ValueError(
            "fit: normalize=True needs a fastcnn.data.Normalize in the model (the reference "
            "models have one); add it, e.g. nn.Sequential(Normalize(channels), model), or pass "
            "normalize=False"
        )
    if not bool(layers[0].fitted):
        layers[0].fit_(_images(data, dataset))
        log.info(
            "input normalization from the training split: mean %s, std %s",
            layers[0].mean.tolist(),
            layers[0].std.tolist(),
        )


def _optimizer(optimizer, model, lr, momentum, weight_decay) -> torch.optim.Optimizer:
    if optimizer is None:
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if callable(optimizer):
        return optimizer(model.parameters())
    raise TypeError(f"fit: optimizer must be None, an Optimizer or a factory, got {optimizer!r}")


def _scheduler(scheduler, optimizer, total_steps: int):
    if scheduler is None or isinstance(scheduler, str):
        return schedules.make(scheduler, optimizer, total_steps)
    if callable(scheduler) and not hasattr(scheduler, "step"):
        return scheduler(optimizer)
    return scheduler


def _device(device) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data,
    *,
    batch_size: int = 256,
    device=None,
    loss_fn: Callable | None = None,
) -> dict:
    """Mean loss and accuracy of a classifier over a dataset.

    Args:
        model: maps Tensor[N, C, H, W] to logits Tensor[N, classes].
        data: a Dataset of (image, label) pairs, or a fastcnn.data.ImageData (its test split).

    Returns:
        ``{"loss": float, "accuracy": float, "count": int}``.
    """
    if hasattr(data, "test") and hasattr(data, "classes"):
        data = data.test
    if data is None or len(data) == 0:
        raise ValueError("evaluate: data must hold at least one example")
    device = _device(device) if device is not None else next(model.parameters()).device
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    was_training = model.training
    model.eval()
    total = correct = count = 0.0
    for x, y in DataLoader(data, batch_size=batch_size):
        x, y = x.to(device), y.to(device)
        out = model(x)
        total += float(loss_fn(out, y, reduction="sum"))
        correct += float((out.argmax(1) == y).sum())
        count += len(y)
    model.train(was_training)
    return {"loss": total / count, "accuracy": correct / count, "count": int(count)}


def fit(
    model: torch.nn.Module,
    train,
    val=None,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    optimizer=None,
    scheduler=None,
    loss_fn: Callable | None = None,
    device=None,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    seed: int = 0,
    early_stopping: int | None = None,
    normalize: bool = True,
    amp: str | None = None,
    channels_last: bool = False,
    meta: dict | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> History:
    """Trains a classifier in place and returns its :class:`History`.

    Args:
        model: maps Tensor[N, C, H, W] to logits Tensor[N, classes].
        train: a Dataset of (Tensor[C, H, W], label) pairs, or a fastcnn.data.ImageData (its
            train split; its val split is used when ``val`` is None).
        val: optional Dataset for validation after every epoch.
        epochs: total epochs (a resumed run continues up to this number).
        batch_size: the global batch; under torchrun each process takes an equal share.
        lr, momentum, weight_decay: SGD's settings, used when ``optimizer`` is None.
        optimizer: None (SGD with momentum), an Optimizer, or a factory ``params -> Optimizer``.
        scheduler: None / ``"constant"``, ``"step"``, ``"cosine"``, ``"onecycle"`` (stepped per
            optimizer step), a scheduler, or a factory ``optimizer -> scheduler``.
        loss_fn: ``(logits, labels) -> loss``; cross-entropy by default.
        device: where to train; CUDA when available by default.
        progress: show tqdm progress bars with the running loss.
        checkpoint: a folder for ``last.pt`` (every epoch, and on Ctrl-C) and ``best.pt`` (best
            validation accuracy), holding model, optimizer, scheduler, history, normalization and
            RNG state.
        resume: continue from ``checkpoint/last.pt``, exactly where it stopped.
        seed: seeds torch's and Python's RNGs and the data order. For a reproducible run, also
            seed before building the model (its initial weights come from the global RNG).
        early_stopping: stop after this many epochs without a lower validation loss.
        normalize: fit the model's first :class:`fastcnn.data.Normalize` on the training split
            (unless already fitted).
        amp: ``"bf16"`` or ``"fp16"`` autocast (CUDA only).
        channels_last: train with channels_last tensors.
        meta: extra entries stored in every checkpoint (e.g. how to rebuild the model).
        on_step: called with a :class:`Step` after every optimizer step.

    Ctrl-C finishes the step in flight, writes ``last.pt`` (when ``checkpoint`` is set) and
    raises KeyboardInterrupt; ``resume=True`` then continues with exactly the same weights an
    uninterrupted run would have.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"fit: epochs must be an int >= 1, got {epochs!r}")
    if amp not in (None, "bf16", "fp16"):
        raise ValueError(f"fit: amp must be None, 'bf16' or 'fp16', got {amp!r}")
    if resume and checkpoint is None:
        raise ValueError("fit: resume=True needs checkpoint= (the folder to resume from)")
    train_set, val_set = _split(train, val)
    device = _device(device)
    if amp and device.type != "cuda":
        raise ValueError(f"fit: amp={amp!r} needs a CUDA device, got {device}")
    world = distributed.setup(device)
    if batch_size % world.size:
        raise ValueError(
            f"fit: batch_size ({batch_size}) must be divisible by the number of processes "
            f"({world.size})"
        )
    if normalize:
        _fit_normalization(model, train, train_set)
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    model.to(device=device, memory_format=memory_format)
    opt = _optimizer(optimizer, model, lr, momentum, weight_decay)
    sampler = DistributedSampler(train_set, num_replicas=world.size, rank=world.rank, seed=seed)
    # A private generator keeps the loader from drawing on the global RNG.
    loader = DataLoader(
        train_set, batch_size=batch_size // world.size, sampler=sampler, generator=torch.Generator()
    )
    sched = _scheduler(scheduler, opt, epochs * len(loader))
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    net = model
    if world.size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    folder = Path(checkpoint) if checkpoint is not None else None
    config = {"batch_size": batch_size, "seed": seed, "world_size": world.size}

    history, start_epoch, start_step = History(), 0, 0
    partial = {"loss": 0.0, "correct": 0.0, "count": 0.0, "seconds": 0.0}
    best = {"val_accuracy": -math.inf, "val_loss": math.inf, "bad_epochs": 0}
    if resume:
        path = folder / LAST
        state = ckpt.load(path)
        for key, want in config.items():
            if state["config"].get(key) != want:
                raise ValueError(
                    f"fit: {path} was written with {key}={state['config'].get(key)}, this run has "
                    f"{key}={want}; resume with the same settings"
                )
        ckpt.load_model_state(model, state["model"], path)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        history = History.from_state_dict(state["history"])
        start_epoch, start_step = state["epoch"], state["step"]
        partial, best = state["partial"], state["best"]
        _set_rng_state(state["rng"])
        log.info("resuming from %s at epoch %d, step %d", path, start_epoch + 1, start_step)
    else:
        torch.manual_seed(seed)
        random.seed(seed)

    def save(name: str, epoch: int, step: int) -> None:
        if folder is None or not world.is_main:
            return
        ckpt.save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "history": history.state_dict(),
                "epoch": epoch,
                "step": step,
                "partial": partial,
                "best": best,
                "rng": _rng_state(),
                "config": config,
                "meta": meta or {},
            },
            folder / name,
        )

    from tqdm.auto import tqdm

    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    with deferred_sigint() as stop:
        for epoch in range(start_epoch, epochs):
            sampler.set_epoch(epoch)
            net.train()
            started = time.perf_counter()
            first = start_step if epoch == start_epoch else 0
            bar = tqdm(
                total=len(loader),
                initial=first,
                desc=f"epoch {epoch + 1}/{epochs}",
                disable=not (progress and world.is_main),
                leave=False,
                dynamic_ncols=True,
            )
            for step, (x, y) in enumerate(loader):
                if step < first:
                    continue  # resumed mid-epoch: these batches were already trained on
                x = x.to(device, non_blocking=True, memory_format=memory_format)
                y = y.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=amp is not None):
                    out = net(x)
                    loss = loss_fn(out, y)
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                sched.step()
                value = float(loss.detach())
                history.step_loss.append(value)
                partial["loss"] += value * len(y)
                partial["correct"] += float((out.argmax(1) == y).sum())
                partial["count"] += len(y)
                bar.update()
                bar.set_postfix(loss=f"{partial['loss'] / partial['count']:.4f}")
                if on_step is not None:
                    on_step(Step(epoch, step, epoch * len(loader) + step, value))
                if stop.requested:
                    partial["seconds"] += time.perf_counter() - started
                    save(LAST, epoch, step + 1)
                    bar.close()
                    where = f"; resume from {folder / LAST}" if folder is not None else ""
                    log.warning("interrupted at epoch %d, step %d%s", epoch + 1, step + 1, where)
                    raise KeyboardInterrupt
            bar.close()
            loss_sum, correct, count = distributed.all_sum(
                [partial["loss"], partial["correct"], partial["count"]], world, device
            )
            metrics = {"val_loss": math.nan, "val_accuracy": math.nan}
            if val_set is not None:
                result = evaluate(model, val_set, device=device, loss_fn=loss_fn)
                metrics = {"val_loss": result["loss"], "val_accuracy": result["accuracy"]}
            history.append(
                epoch=epoch + 1,
                loss=loss_sum / count,
                accuracy=correct / count,
                lr=opt.param_groups[0]["lr"],
                seconds=partial["seconds"] + time.perf_counter() - started,
                **metrics,
            )
            partial = {"loss": 0.0, "correct": 0.0, "count": 0.0, "seconds": 0.0}
            log.info(
                "epoch %d/%d: loss %.4f, accuracy %.2f%%, val_loss %.4f, val_accuracy %.2f%%",
                epoch + 1,
                epochs,
                history.loss[-1],
                100 * history.accuracy[-1],
                metrics["val_loss"],
                100 * metrics["val_accuracy"],
            )
            monitored = metrics["val_loss"] if val_set is not None else history.loss[-1]
            improved_loss = monitored < best["val_loss"]
            best["bad_epochs"] = 0 if improved_loss else best["bad_epochs"] + 1
            best["val_loss"] = min(best["val_loss"], monitored)
            accuracy = metrics["val_accuracy"] if val_set is not None else history.accuracy[-1]
            if accuracy > best["val_accuracy"]:
                best["val_accuracy"] = accuracy
                save(BEST, epoch + 1, 0)
            stopping = early_stopping is not None and best["bad_epochs"] >= early_stopping
            save(LAST, epochs if stopping else epoch + 1, 0)
            if stopping:
                log.info("early stopping: no lower loss for %d epochs", early_stopping)
                break
    return history
