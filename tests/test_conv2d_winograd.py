"""Tests of the Winograd F(4x4, 3x3) forward path of ``fastcnn.ops.conv2d`` and of the switch
that forces direct convolution (``fastcnn.ops.{set,get,use}_conv_algorithm``,
``FASTCNN_CONV_ALGO``).

Winograd's accuracy is measured against a float64 convolution of the same float32 inputs:
``max |y - y64| / max |y64|`` over one output tensor must stay below 1e-4 (the documented
guarantee). Every ISA's transforms (generic, AVX2, AVX-512) run in a subprocess with
``FASTCNN_ISA`` capping the choice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import fastcnn
from fastcnn.ops import get_conv_algorithm, set_conv_algorithm, use_conv_algorithm

BOUND = 1e-4  # the documented relative error bound
ISAS = ("generic", "avx2", "avx512")
FORMATS = (torch.contiguous_format, torch.channels_last)


def relative_error(y: torch.Tensor, y64: torch.Tensor) -> float:
    """max |y - y64| / max |y64| over the whole tensor (the documented metric)."""
    return ((y.double() - y64).abs().max() / y64.abs().max()).item()


def conv64(x, w, b, padding, relu=False):
    """The float64 reference: the same float32 values, convolved in float64."""
    y = F.conv2d(x.double(), w.double(), None if b is None else b.double(), padding=padding)
    return y.relu() if relu else y


def make(n, c, k, h, w, fmt, scale_x=1.0, bias=True):
    x = (torch.randn(n, c, h, w) * scale_x).contiguous(memory_format=fmt)
    wt = (torch.randn(k, c, 3, 3) * (2.0 / (9 * c)) ** 0.5).contiguous(memory_format=fmt)
    b = torch.randn(k) * 0.1 if bias else None
    return x, wt, b


# (N, C, K, H, W, padding): tile edges (H, W not multiples of 4, outputs smaller than a tile),
# channel counts that are not multiples of the 16-lane blocks or of the micro-kernel's
# columns, several tile blocks, a single block with split filter chunks, padding 0, 1, 2;
# NCHW planes of 4 KB and 16 KB (a pixel's channels in one L1 set). NCHW rows are staged as
# channels_last a run of tiles at a time: rows that are not whole 8-column transposes, and
# runs that end at a tile row (or an image) inside a panel of tiles. The last two transform
# the filters per thread in channel blocks whose products add up (the second with blocks
# of 160 and 140 channels and a last filter chunk of 12).
SHAPES = [
    (2, 16, 24, 32, 32, 1),
    (2, 12, 10, 32, 32, 0),
    (1, 8, 9, 64, 64, 2),
    (2, 16, 16, 9, 11, 1),
    (1, 8, 8, 4, 4, 1),
    (3, 17, 33, 5, 6, 1),
    (1, 20, 18, 4, 13, 0),
    (1, 24, 40, 3, 3, 2),
    (2, 9, 70, 14, 14, 1),
    (4, 64, 64, 23, 17, 1),
    (2, 130, 48, 7, 7, 1),
    (1, 512, 512, 7, 7, 1),
    (1, 300, 140, 6, 6, 1),
]


@pytest.fixture(autouse=True)
def _auto():
    """Every test starts and ends with the default algorithm."""
    set_conv_algorithm("auto")
    yield
    set_conv_algorithm("auto")


class TestAccuracy:
    @pytest.mark.parametrize("fmt", FORMATS, ids=["nchw", "channels_last"])
    @pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
    def test_against_float64(self, shape, fmt):
        n, c, k, h, w, pad = shape
        x, wt, b = make(n, c, k, h, w, fmt)
        for relu in (False, True):
            y = fastcnn.ops.conv2d(x, wt, b, padding=pad, activation="relu" if relu else None)
            assert y.is_contiguous(memory_format=fmt)
            assert relative_error(y, conv64(x, wt, b, pad, relu)) < BOUND

    @pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
    def test_realistic_magnitudes(self, scale):
        """Post-ReLU activations (non-negative, so the sums do not cancel) at several scales,
        He-initialized filters, a deep reduction (256 channels)."""
        x, wt, b = make(2, 256, 64, 14, 14, torch.channels_last, scale_x=scale)
        x = x.relu()
        y = fastcnn.ops.conv2d(x, wt, b * scale, padding=1)
        assert relative_error(y, conv64(x, wt, b * scale, 1)) < BOUND

    def test_worst_of_many_random_inputs(self):
        worst = 0.0
        for seed in range(20):
            torch.manual_seed(seed)
            x, wt, b = make(1, 32, 32, 12, 12, torch.channels_last)
            y = fastcnn.ops.conv2d(x, wt, b, padding=1)
            worst = max(worst, relative_error(y, conv64(x, wt, b, 1)))
        assert worst < BOUND

    def test_non_finite_inputs_stay_non_finite(self):
        """A NaN or an infinity reaches every output whose window holds it, as in direct
        summation (it may spread to the rest of its 4x4 tile as NaN)."""
        x, wt, b = make(2, 16, 16, 16, 16, torch.contiguous_format)
        x[0, 3, 9, 7] = float("nan")
        x[1, 0, 4, 12] = float("inf")
        for act in (None, "relu"):  # the fused ReLU keeps NaN, as torch.relu
            y = fastcnn.ops.conv2d(x, wt, b, padding=1, activation=act)
            ref = F.conv2d(x, wt, b, padding=1)
            ref = ref.relu() if act else ref
            assert (~torch.isfinite(y))[~torch.isfinite(ref)].all()
            assert torch.isfinite(y[0, :, :4]).all()  # tiles whose windows miss it stay finite

    @pytest.mark.parametrize("fmt", FORMATS, ids=["nchw", "channels_last"])
    @pytest.mark.parametrize(
        "shape", [(8, 512, 512, 7, 7), (2, 130, 48, 7, 7), (1, 24, 40, 3, 3), (4, 64, 64, 23, 17)]
    )
    def test_thread_counts_give_the_same_bits(self, shape, fmt):
        """A single block's input is transformed once, a share of its panels per thread (the
        first three shapes: one block of 32, 8 and 1 tiles, so 4, 1-2 and 1 panels of the
        micro-kernel's 4-8 rows); every output still comes from one thread's sums, so every
        thread count gives the same bits, and each within the bound."""
        n, c, k, h, w = shape
        x, wt, b = make(n, c, k, h, w, fmt)
        saved = torch.get_num_threads()
        try:
            ys = []
            for threads in (1, 2, 3, 4):
                torch.set_num_threads(threads)
                ys.append(fastcnn.ops.conv2d(x, wt, b, padding=1, activation="relu"))
        finally:
            torch.set_num_threads(saved)
        assert relative_error(ys[0], conv64(x, wt, b, 1, relu=True)) < BOUND
        for y in ys[1:]:
            assert torch.equal(y, ys[0])

    def test_matches_direct(self):
        x, wt, b = make(2, 32, 48, 15, 10, torch.channels_last)
        y = fastcnn.ops.conv2d(x, wt, b, padding=1, activation="relu")
        with use_conv_algorithm("direct"):
            y_direct = fastcnn.ops.conv2d(x, wt, b, padding=1, activation="relu")
        assert relative_error(y, y_direct.double()) < BOUND


class TestDispatch:
    def test_winograd_runs_on_eligible_shapes(self):
        """Different rounding from direct proves the Winograd path ran."""
        x, wt, b = make(2, 32, 32, 16, 16, torch.channels_last)
        y = fastcnn.ops.conv2d(x, wt, b, padding=1)
        with use_conv_algorithm("direct"):
            y_direct = fastcnn.ops.conv2d(x, wt, b, padding=1)
        assert not torch.equal(y, y_direct)

    @pytest.mark.parametrize(
        "case",
        [
            dict(shape=(1, 16, 16, 8, 8), kw=dict(padding=1, stride=2)),
            dict(shape=(1, 16, 16, 8, 8), kw=dict(padding=2, dilation=2)),
            dict(shape=(1, 16, 16, 8, 8), kw=dict(padding=1, groups=2)),
            dict(shape=(1, 4, 16, 8, 8), kw=dict(padding=1)),  # too few channels
            dict(shape=(1, 16, 4, 8, 8), kw=dict(padding=1)),  # too few filters
            dict(shape=(1, 16, 16, 8, 8), kw=dict(padding=1), dtype=torch.float64),
        ],
        ids=["stride2", "dilation2", "groups2", "c4", "k4", "float64"],
    )
    def test_other_shapes_stay_direct(self, case):
        n, c, k, h, w = case["shape"]
        dtype = case.get("dtype", torch.float32)
        groups = case["kw"].get("groups", 1)
        x = torch.randn(n, c, h, w, dtype=dtype)
        wt = torch.randn(k, c // groups, 3, 3, dtype=dtype)
        y = fastcnn.ops.conv2d(x, wt, **case["kw"])
        with use_conv_algorithm("direct"):
            y_direct = fastcnn.ops.conv2d(x, wt, **case["kw"])
        assert torch.equal(y, y_direct)

    def test_empty_batch(self):
        x, wt, b = make(0, 16, 16, 8, 8, torch.channels_last)
        y = fastcnn.ops.conv2d(x, wt, b, padding=1)
        assert y.shape == (0, 16, 8, 8)

    def test_non_contiguous_input(self):
        x, wt, b = make(2, 32, 16, 12, 20, torch.contiguous_format)
        x = x[:, :, :, ::2]
        y = fastcnn.ops.conv2d(x, wt, b, padding=1)
        assert relative_error(y, conv64(x, wt, b, 1)) < BOUND


class TestGradients:
    @pytest.mark.parametrize("fmt", FORMATS, ids=["nchw", "channels_last"])
    def test_backward_through_winograd_forward(self, fmt):
        """With the fused ReLU the backward masks by Winograd's output."""
        x, wt, b = make(2, 16, 24, 10, 9, fmt)
        for t in (x, wt, b):
            t.requires_grad_()
        y = fastcnn.ops.conv2d(x, wt, b, padding=1, activation="relu")
        go = torch.randn_like(y)
        grads = torch.autograd.grad(y, (x, wt, b), go)
        ref = F.relu(F.conv2d(x, wt, b, padding=1))
        refs = torch.autograd.grad(ref, (x, wt, b), go)
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
        for got, want in zip(grads, refs):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)

    @pytest.mark.parametrize("fmt", FORMATS, ids=["nchw", "channels_last"])
    @pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
    def test_input_gradient_against_float64(self, shape, fmt):
        """A stride-1 backward-input is the forward convolution of the output gradient with
        flipped filters, so it takes the Winograd path too, within the same bound."""
        n, c, k, h, w, pad = shape
        x, wt, _ = make(n, c, k, h, w, fmt)
        go = torch.randn(F.conv2d(x, wt, padding=pad).shape).contiguous(memory_format=fmt)
        x.requires_grad_()
        (gx,) = torch.autograd.grad(fastcnn.ops.conv2d(x, wt, padding=pad), x, go)
        x64 = x.detach().double().requires_grad_()
        (gx64,) = torch.autograd.grad(F.conv2d(x64, wt.double(), padding=pad), x64, go.double())
        assert gx.is_contiguous(memory_format=fmt)
        assert relative_error(gx, gx64) < BOUND
        with use_conv_algorithm("direct"):
            (gx_direct,) = torch.autograd.grad(fastcnn.ops.conv2d(x, wt, padding=pad), x, go)
        assert not torch.equal(gx, gx_direct)  # different rounding: Winograd ran

    @pytest.mark.parametrize("fmt", FORMATS, ids=["nchw", "channels_last"])
    def test_strided_input_gradient_phases_against_float64(self, fmt):
        """A strided backward-input runs phase by phase: a 5x5 stride-2 layer's phase with
        3x3 taps is a 3x3 stride-1 forward convolution, so it takes Winograd, within the bound."""
        x = torch.randn(2, 16, 13, 11).contiguous(memory_format=fmt).requires_grad_()
        wt = (torch.randn(12, 16, 5, 5) / 20).contiguous(memory_format=fmt)
        go = torch.randn(F.conv2d(x, wt, stride=2, padding=2).shape).contiguous(memory_format=fmt)
        (gx,) = torch.autograd.grad(fastcnn.ops.conv2d(x, wt, stride=2, padding=2), x, go)
        x64 = x.detach().double().requires_grad_()
        y64 = F.conv2d(x64, wt.double(), stride=2, padding=2)
        (gx64,) = torch.autograd.grad(y64, x64, go.double())
        assert relative_error(gx, gx64) < BOUND
        with use_conv_algorithm("direct"):
            (gx_direct,) = torch.autograd.grad(
                fastcnn.ops.conv2d(x, wt, stride=2, padding=2), x, go
            )
        assert not torch.equal(gx, gx_direct)  # different rounding: Winograd ran


class TestSwitch:
    def test_default_and_context_manager(self):
        assert get_conv_algorithm() == "auto"
        with use_conv_algorithm("direct"):
            assert get_conv_algorithm() == "direct"
            with use_conv_algorithm("auto"):
                assert get_conv_algorithm() == "auto"
            assert get_conv_algorithm() == "direct"
        assert get_conv_algorithm() == "auto"

    def test_context_manager_restores_after_an_exception(self):
        with pytest.raises(KeyError), use_conv_algorithm("direct"):
            raise KeyError("inside")
        assert get_conv_algorithm() == "auto"

    def test_setter(self):
        set_conv_algorithm("direct")
        assert get_conv_algorithm() == "direct"
        assert fastcnn._C.conv_algorithm() == "direct"

    @pytest.mark.parametrize("bad", ["winograd", "", "AUTO", None, 1])
    def test_bad_algorithm(self, bad):
        with pytest.raises(ValueError, match="algorithm must be 'auto' or 'direct', got"):
            set_conv_algorithm(bad)
        with pytest.raises(ValueError, match="algorithm must be 'auto' or 'direct'"):
            use_conv_algorithm(bad).__enter__()
        assert get_conv_algorithm() == "auto"

    def test_compiled_module_checks_too(self):
        with pytest.raises(ValueError, match="set_conv_algorithm: algorithm must be"):
            fastcnn._C.set_conv_algorithm("fast")


def _python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


class TestSubprocess:
    @pytest.mark.parametrize("isa", ISAS)
    def test_every_isa(self, isa):
        """Each ISA's transforms meet the bound in both formats, and differ from direct. The
        last shape adds per-thread filter transforms over several channel blocks on every ISA's
        micro-kernel width."""
        order = {name: i for i, name in enumerate(ISAS)}
        if order[isa] > order[fastcnn.info()["isa"]]:
            pytest.skip(f"this CPU does not run {isa}")
        code = """
            import json, torch, torch.nn.functional as F, fastcnn
            torch.manual_seed(0)
            worst, differs = 0.0, True
            for fmt in (torch.contiguous_format, torch.channels_last):
                for n, c, k, h, w in [(2, 17, 33, 9, 7), (1, 64, 40, 14, 14), (3, 8, 8, 5, 5),
                                      (1, 1000, 33, 5, 5)]:
                    x = torch.randn(n, c, h, w).contiguous(memory_format=fmt)
                    wt = torch.randn(k, c, 3, 3).contiguous(memory_format=fmt) / (3 * c**0.5)
                    b = torch.randn(k)
                    y = fastcnn.ops.conv2d(x, wt, b, padding=1, activation="relu")
                    y64 = F.conv2d(x.double(), wt.double(), b.double(), padding=1).relu()
                    err = ((y.double() - y64).abs().max() / y64.abs().max()).item()
                    worst = max(worst, err)
                    with fastcnn.ops.use_conv_algorithm("direct"):
                        yd = fastcnn.ops.conv2d(x, wt, b, padding=1, activation="relu")
                    differs = differs and not torch.equal(y, yd)
            print(json.dumps({"isa": fastcnn.info()["isa"], "worst": worst, "differs": differs}))
        """
        proc = _python(code, {"FASTCNN_ISA": isa})
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["isa"] == isa
        assert result["worst"] < BOUND
        assert result["differs"]

    def test_environment_forces_direct(self):
        code = """
            import torch, fastcnn
            from fastcnn import _C
            print(fastcnn.ops.get_conv_algorithm())
            x, w = torch.randn(1, 16, 8, 8), torch.randn(16, 16, 3, 3)
            y = fastcnn.ops.conv2d(x, w, padding=1)
            with fastcnn.ops.use_conv_algorithm("direct"):
                print(torch.equal(y, fastcnn.ops.conv2d(x, w, padding=1)))
        """
        proc = _python(code, {"FASTCNN_CONV_ALGO": "direct"})
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == ["direct", "True"]

    def test_environment_bad_value(self):
        proc = _python("import fastcnn.ops", {"FASTCNN_CONV_ALGO": "winograd"})
        assert proc.returncode != 0
        assert (
            "ValueError: the environment variable FASTCNN_CONV_ALGO must be 'auto' or 'direct', "
            "got 'winograd'"
        ) in proc.stderr
