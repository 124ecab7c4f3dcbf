"""Checkpoints: written atomically (a crash mid-write leaves the previous one intact) and
read back with errors that say what is wrong with the file."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

FORMAT = "fastcnn-checkpoint"
VERSION = 1


def save(state: dict, path: str | os.PathLike) -> Path:
    """Writes ``state`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: str | os.PathLike) -> dict:
    """Reads a checkpoint written by :func:`save`.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is truncated, corrupt, or not a fastcnn checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no file at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        raise ValueError(f"checkpoint: {path} is truncated or corrupt ({e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"checkpoint: {path} is not a fastcnn checkpoint")
    if state.get("version") != VERSION:
        raise ValueError(
            f"checkpoint: {path} has format version {state.get('version')}, this fastcnn "
            f"reads version {VERSION}"
        )
    return state


def load_model_state(model: torch.nn.Module, state_dict: dict, path) -> None:
    """``model.load_state_dict`` with a clear error when the architectures differ."""
    missing, unexpected, mismatched = [], [], []
    own = model.state_dict()
    for key, value in state_dict.items():
        if key not in own:
            unexpected.append(key)
        elif own[key].shape != value.shape:
            mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}")
    missing = [key for key in own if key not in state_dict]
    if missing or unexpected or mismatched:
        details = "; ".join(
            f"{what}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
            for what, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape differs (checkpoint vs model)", mismatched),
            )
            if keys
        )
        raise ValueError(f"checkpoint: {path} does not fit this model ({details})")
    model.load_state_dict(state_dict)


def load_model(path: str | os.PathLike) -> tuple[torch.nn.Module, dict]:
    """Rebuilds a reference model from a checkpoint written by ``fastcnn train`` / ``demo``
    (its ``meta`` names the model and its arguments) and loads its weights.

    Returns:
        ``(model in eval mode, meta)``; meta holds ``model``, ``model_kwargs``, ``classes``,
        ``data`` and ``image_size``.
    """
    from .. import models

    state = load(path)
    meta = state.get("meta") or {}
    if "model" not in meta or "model_kwargs" not in meta:
        raise ValueError(
            f"checkpoint: {path} does not say which model it holds (no meta['model']); "
            "it was not written by `fastcnn train` / `fastcnn demo`"
        )
    model = models.build(meta["model"], **meta["model_kwargs"])
    load_model_state(model, state["model"], path)
    return model.eval(), meta
