"""Large CPU outputs are backed by transparent huge pages, which cut a fresh output's page
faults 512-fold; FASTCNN_HUGE_PAGES=0 leaves memory as torch maps it.

Only meaningful where the kernel gives huge pages on request ("madvise" mode): under "always"
every mapping gets them and under "never" none does, so the tests skip there."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import fastcnn
from fastcnn.ops._boundary import _C


def _thp_mode() -> str | None:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.index("[") + 1 : text.index("]")]


pytestmark = pytest.mark.skipif(
    _thp_mode() != "madvise"
    or os.environ.get("THP_MEM_ALLOC_ENABLE")
    or os.environ.get("FASTCNN_HUGE_PAGES") == "0",
    reason="needs transparent huge pages in madvise mode, fastcnn's on and torch's off",
)

MIB = 1 << 20


def huge_page_bytes(t: torch.Tensor) -> int:
    """The bytes of huge pages in the mappings that overlap ``t``'s memory (/proc/self/smaps;
    the advice splits a mapping, so the block spans several)."""
    first, last = t.data_ptr(), t.data_ptr() + t.nbytes
    total, overlaps = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                begin, end = (int(part, 16) for part in head.split("-"))
                overlaps = begin < last and first < end
            elif overlaps and head == "AnonHugePages:":
                total += int(line.split()[1]) * 1024
    return total


def _leaf(*shape, channels_last=False):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.randn(shape).contiguous(memory_format=fmt).requires_grad_()


def _grad(y, x):
    return torch.autograd.grad(y, x, torch.ones_like(y))[0]


# Each builds one output of at least 32 MiB through one of the ops' allocation sites.
OUTPUTS = {
    "relu": lambda: fastcnn.ops.relu(torch.randn(8 * MIB)),
    "relu backward": lambda: (lambda x: _grad(fastcnn.ops.relu(x), x))(_leaf(8 * MIB)),
    "conv2d": lambda: fastcnn.ops.conv2d(torch.randn(2, 4, 1024, 1024), torch.randn(4, 4, 1, 1)),
    "conv2d backward-input": lambda: (
        lambda x: _grad(fastcnn.ops.conv2d(x, torch.randn(4, 4, 1, 1)), x)
    )(_leaf(2, 4, 1024, 1024, channels_last=True)),
    "max_pool2d": lambda: fastcnn.ops.max_pool2d(torch.randn(8, 4, 1024, 1024), 1),
    "max_pool2d backward": lambda: (lambda x: _grad(fastcnn.ops.max_pool2d(x, 2), x))(
        _leaf(2, 4, 1024, 1024)
    ),
    "global_avg_pool2d backward": lambda: (lambda x: _grad(fastcnn.ops.global_avg_pool2d(x), x))(
        _leaf(2, 4, 1024, 1024)
    ),
}


def _kernel_gives_huge_pages() -> bool:
    """Whether the kernel hands out huge pages right now: a control block of the same size,
    advised the same way. It has none to give while memory is fragmented (once in a CI run,
    mid-suite) and then falls back to small pages for every block alike."""
    control = torch.empty(8 * MIB)
    _C.advise_huge_pages(control.data_ptr(), control.nbytes)
    control.fill_(1.0)
    return huge_page_bytes(control) >= control.nbytes // 2


@pytest.mark.parametrize("site", list(OUTPUTS))
def test_large_outputs_are_on_huge_pages(site):
    out = OUTPUTS[site]()
    assert out.nbytes >= 32 * MIB
    # The whole 2 MiB pages inside the block; the kernel falls back to small pages where it
    # finds no free huge one, so ask for half of them.
    if huge_page_bytes(out) < out.nbytes // 2 and not _kernel_gives_huge_pages():
        pytest.skip("the kernel had no free huge pages to give (a control block got none)")
    assert huge_page_bytes(out) >= out.nbytes // 2


def test_torch_outputs_stay_on_small_pages():
    """The check above can tell the two apart: torch's own output of the same size has none."""
    assert huge_page_bytes(torch.relu(torch.randn(8 * MIB))) == 0


def test_switch_off_leaves_small_pages():
    code = (
        "import torch, fastcnn, test_huge_pages as t\n"
        "print(t.huge_page_bytes(fastcnn.ops.relu(torch.randn(8 << 20))))\n"
    )
    env = dict(os.environ, FASTCNN_HUGE_PAGES="0", PYTHONPATH=os.path.dirname(__file__))
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert int(result.stdout) == 0


def test_advice_skips_blocks_without_a_whole_huge_page():
    small = torch.empty(MIB, dtype=torch.uint8)
    assert not _C.advise_huge_pages(small.data_ptr(), small.nbytes)
