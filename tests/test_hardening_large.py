"""64-bit indexing: one op call over a float32 tensor of more than 2^31 elements (8.6 GB)
gives the right answer, checked chunk by chunk (never a second full-size copy)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastcnn

# Two planes of 32768 x 32769: 2,147,549,184 elements, so the second plane's elements (and
# in channels_last every element past the first 2^31) sit at offsets past 2^31.
SHAPE = (1, 2, 32768, 32769)
NUMEL = 2 * 32768 * 32769
CHUNK = 1 << 24
PERIOD = 251  # the input is (flat index mod 251) - 125: exact in float32; 251 divides no row

pytestmark = pytest.mark.slow


def _available_bytes() -> int:
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024


@pytest.fixture
def big_input(request):
    """The pattern written into a tensor of SHAPE in the requested memory format, and each
    channel's exact sum (Python ints)."""
    footprint = NUMEL * 4 * 1.1
    if _available_bytes() < footprint + (2 << 30):
        pytest.skip(f"needs {footprint / 2**30:.1f} GiB of free memory plus 2 GiB to spare")
    x = torch.empty(SHAPE, memory_format=request.param)
    flat = x.permute(0, 2, 3, 1) if request.param == torch.channels_last else x
    flat = flat.reshape(-1)  # a view: x is dense in this order
    channels, hw = SHAPE[1], SHAPE[2] * SHAPE[3]
    period = torch.arange(CHUNK + PERIOD) % PERIOD - 125  # the pattern from any phase
    sums = [0] * channels
    for start in range(0, NUMEL, CHUNK):
        n = min(CHUNK, NUMEL - start)
        vals = period[start % PERIOD : start % PERIOD + n]
        flat[start : start + n] = vals
        # NCHW: a channel is a run of H*W elements; NHWC: every C-th element (CHUNK is even).
        if request.param == torch.channels_last:
            for c in range(channels):
                sums[c] += int(vals[c::channels].sum())
        else:
            first = start // hw
            split = min(n, (first + 1) * hw - start)  # where the chunk crosses into the next plane
            sums[first] += int(vals[:split].sum())
            if split < n:
                sums[first + 1] += int(vals[split:].sum())
    yield x, sums
    del x, flat


FORMATS = [torch.contiguous_format, torch.channels_last]


@pytest.mark.parametrize("big_input", FORMATS, ids=["nchw", "nhwc"], indirect=True)
def test_global_avg_pool2d_over_2_31_elements(big_input):
    x, sums = big_input
    assert x.numel() > 2**31
    out = fastcnn.ops.global_avg_pool2d(x)
    hw = SHAPE[2] * SHAPE[3]
    expected = torch.tensor([[s / hw for s in sums]])
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("big_input", [torch.contiguous_format], ids=["nchw"], indirect=True)
def test_max_pool2d_over_2_31_elements(big_input):
    x, _ = big_input
    kernel, stride, padding = 3, 4, 1  # every window reads 3 rows; the output stays small
    out = fastcnn.ops.max_pool2d(x, kernel, stride, padding)
    rows = 1024  # output rows per chunk, compared against torch on the matching input rows
    for c in range(SHAPE[1]):
        for r0 in range(0, out.shape[2], rows):
            r1 = min(r0 + rows, out.shape[2])
            lo = r0 * stride - padding  # first input row of the chunk's windows
            top = max(lo, 0)
            part = x[:, c : c + 1, top : min(r1 * stride - padding + kernel, SHAPE[2])]
            part = F.pad(part, (0, 0, top - lo, 0), value=-float("inf"))
            want = F.max_pool2d(part, kernel, stride, (0, padding))[:, :, : r1 - r0]
            assert torch.equal(out[:, c : c + 1, r0:r1], want), f"channel {c} rows {r0}:{r1}"
