"""Shared test setup: a seeded RNG and a scratch working folder per test, and CUDA tests
skipped without a device."""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _outside_the_source_tree(tmp_path, monkeypatch):
    """Tests (and the Python subprocesses they start) run in a scratch folder, so that
    ``import fastcnn`` finds the installed package, never the unbuilt source tree."""
    monkeypatch.chdir(tmp_path)


def devices() -> list[str]:
    """The devices to parametrize over: cpu always, cuda when present."""
    return ["cpu", pytest.param("cuda", marks=pytest.mark.needs_cuda)]
