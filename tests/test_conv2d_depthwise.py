"""Depthwise convolution (one input channel per group): every path of its CPU kernels.

The vectorized kernels (NCHW rows staged in a padded ring, NHWC vectors along channels) and the
scalar loops they leave the rest to are checked against F.conv2d and autograd, on shapes that
reach each remainder: channel counts and widths off the vector length, outputs narrower than
one vector, stride 2, dilation 2, multiplier 2, padding 0/1/2, large filters and a row too wide
for the staging buffer, padding that differs at the two ends, windows wider or taller than the
image. Each ISA runs in a fresh interpreter (FASTCNN_ISA caps the choice at load), at 1 and 2
threads, and repeats each call: the results are bit-identical across calls and thread counts.
"""

from __future__ import annotations

import pytest
from _isa import ISAS, run_under_isa  # tests/_isa.py (pytest puts tests/ on sys.path)

# [x shape, multiplier, R, S, conv kwargs]
CASES = [
    [[2, 5, 7, 6], 1, 3, 3, {"padding": 1}],  # channels < one vector: NHWC scalar loops
    [[2, 19, 9, 21], 1, 3, 3, {"padding": 1}],  # channels and width off the vector length
    [[2, 16, 8, 17], 1, 3, 3, {"padding": 0}],
    [[1, 20, 11, 13], 1, 3, 3, {"padding": 2}],
    [[2, 18, 9, 10], 1, 3, 3, {"padding": 1, "stride": 2}],
    [[2, 17, 10, 19], 1, 3, 3, {"padding": 2, "dilation": 2}],
    [[1, 16, 9, 35], 1, 3, 3, {"padding": (1, 2), "stride": (1, 2), "dilation": (2, 1)}],
    # NHWC pixel blocks (4 or 6 pixels) under dilated rows
    [[2, 40, 7, 21], 1, 3, 3, {"padding": (2, 1), "dilation": (2, 1)}],
    [[2, 9, 8, 18], 2, 3, 3, {"padding": 1}],  # multiplier 2: NHWC scalar loops
    [[2, 4, 8, 9], 2, 3, 3, {"padding": 1, "stride": 2}],
    [[1, 24, 12, 20], 1, 5, 5, {"padding": 2}],
    [[2, 17, 5, 4], 1, 3, 3, {"padding": 1}],  # output narrower than one vector
    [[1, 6, 5, 6], 1, 7, 8, {"padding": 1}],  # 56 taps
    [[1, 8, 1, 17], 1, 1, 3, {"padding": (0, 1)}],
    [[2, 5, 6, 7], 2, 1, 1, {"stride": 2}],
    [[1, 3, 3, 2100], 1, 3, 3, {"padding": 1}],  # rows wider than the staging buffer
    # NHWC weight gradient in tiles of 64 KB of dY rows: 12 rows a tile over 62, the last
    # tile partial, one tile crossing from the first image into the second
    [[2, 40, 31, 33], 1, 3, 3, {"padding": 1}],
    # padding that differs at the start and the end ("same" with an even filter)
    [[2, 16, 9, 12], 1, 4, 4, {"padding": "same"}],
    [[2, 16, 9, 12], 1, 2, 2, {"padding": "same"}],
    # windows wider than the image with their rows inside; an image shorter than the window
    [[2, 16, 9, 3], 1, 3, 3, {"padding": 2, "dilation": 2}],
    [[2, 16, 2, 9], 1, 3, 3, {"padding": 1}],
    # many taps, not square, on vector-wide channels; stride 2 with padding 2
    [[1, 16, 9, 10], 1, 7, 8, {"padding": 3}],
    [[2, 16, 9, 10], 1, 3, 3, {"padding": 2, "stride": 2}],
]

# Forward (bias + ReLU, and plain) and both gradients against F.conv2d and autograd, for
# float32 and float64, NCHW and channels_last, 1 and 2 threads. Prints the ISA the process ran.
_SCRIPT = r"""
import json, sys, torch, torch.nn.functional as F, fastcnn

torch.manual_seed(0)
for xs, mult, R, S, kw in json.loads(sys.argv[1]):
    C = xs[1]
    kw = {**kw, "groups": C}
    for dtype in (torch.float32, torch.float64):
        for fmt in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(xs, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
            w = torch.randn(C * mult, 1, R, S, dtype=dtype).requires_grad_()
            b = torch.randn(C * mult, dtype=dtype, requires_grad=True)
            grads, first = {}, {}  # each activation's output gradient, results at 1 thread
            for threads in (1, 2):
                torch.set_num_threads(threads)
                for act in (None, "relu"):
                    out = fastcnn.ops.conv2d(x, w, b, activation=act, **kw)
                    ref = F.conv2d(x, w, b, **kw)
                    ref = F.relu(ref) if act else ref
                    go = grads.setdefault(act, torch.randn_like(ref).contiguous(memory_format=fmt))
                    got = (out, *torch.autograd.grad(out, (x, w, b), go))
                    out2 = fastcnn.ops.conv2d(x, w, b, activation=act, **kw)
                    again = (out2, *torch.autograd.grad(out2, (x, w, b), go))
                    want = (ref, *torch.autograd.grad(ref, (x, w, b), go))
                    red = xs[0] * out[0, 0].numel()
                    if dtype == torch.float32:
                        tol = dict(rtol=1e-5, atol=1e-5 + 1e-6 * red)
                    else:
                        tol = dict(rtol=1e-10, atol=1e-12 * red)
                    names = ("output", "grad_input", "grad_weight", "grad_bias")
                    for name, a, a2, e in zip(names, got, again, want):
                        where = f"{name} {xs} x{mult} {R}x{S} {kw} {dtype} {fmt} {act} {threads}t"
                        torch.testing.assert_close(a, e, **tol, msg=lambda m: f"{where}: {m}")
                        assert torch.equal(a, a2), f"{where}: not bit-identical across runs"
                    for name, a, a1 in zip(names, got, first.setdefault(act, got)):
                        where = f"{name} {xs} x{mult} {R}x{S} {kw} {dtype} {fmt} {act}"
                        assert torch.equal(a, a1), f"{where}: 1 and 2 threads differ"
print(fastcnn.info()["isa"])
"""


@pytest.mark.parametrize("isa", ISAS)
def test_depthwise_paths_every_isa(isa):
    run_under_isa(isa, _SCRIPT, CASES)
