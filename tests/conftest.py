"""Shared test setup: a seeded RNG per test, and CUDA tests skipped without a device."""

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


def devices() -> list[str]:
    """The devices to parametrize over: cpu always, cuda when present."""
    return ["cpu", pytest.param("cuda", marks=pytest.mark.needs_cuda)]
