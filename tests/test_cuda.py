"""The CUDA kernels (fastcnn.ops._cuda) against torch on the GPU and float64 references.

Every test needs a CUDA device and an extension built with CUDA. Tolerances, as relative
error ||out - ref|| / ||ref|| against a float64 reference computed from the same (rounded)
inputs: float32 exact math 1e-5; TF32 3e-3 (10 mantissa bits, about 3e-4 expected);
float16 3e-3; bfloat16 2e-2 (8 mantissa bits). Element-wise ops and pooling values must
match exactly.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fastcnn import _C
from fastcnn.ops import _reference as R

pytestmark = [
    pytest.mark.needs_cuda,
    pytest.mark.skipif(not _C.cuda_compiled, reason="fastcnn was built without CUDA"),
]

# Explicit ids, so that -k can select them ("fp16" is no substring of "bf16").
DTYPES = [
    pytest.param(torch.float32, id="fp32"),
    pytest.param(torch.float16, id="fp16"),
    pytest.param(torch.bfloat16, id="bf16"),
]
FORMATS = [
    pytest.param(torch.contiguous_format, id="nchw"),
    pytest.param(torch.channels_last, id="nhwc"),
]
TOL = {torch.float32: 1e-5, "tf32": 3e-3, torch.float16: 3e-3, torch.bfloat16: 2e-2}


def cuda():
    from fastcnn.ops import _cuda

    return _cuda


def rand(*shape, dtype=torch.float32, fmt=torch.contiguous_format) -> torch.Tensor:
    x = torch.randn(*shape, device="cuda").to(dtype)
    return x.contiguous(memory_format=fmt) if len(shape) == 4 else x


def poison_cache(*like: torch.Tensor) -> None:
    """Frees NaN-filled CUDA blocks the size of the coming outputs, so that the caching
    allocator hands them back and an element the kernel fails to write shows as NaN."""
    blocks = [torch.full(t.shape, float("nan"), dtype=t.dtype, device="cuda") for t in like]
    del blocks


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert not out.isnan().any(), "NaN in the output (an element left unwritten?)"
    out, ref = out.double().cpu(), ref.double().cpu()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def exact(out: torch.Tensor, ref: torch.Tensor) -> None:
    torch.testing.assert_close(out.cpu(), ref.cpu(), rtol=0, atol=0, equal_nan=True)


# --- ReLU --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (7,), (4, 3, 5, 7), (2, 64, 9, 9), (1000003,)])
@pytest.mark.parametrize("offset", [0, 1])  # 1: pointers off the 16-byte grid, scalar path
def test_relu_forward_backward(dtype, shape, offset):
    numel = math.prod(shape)
    base = torch.randn(numel + offset, device="cuda").to(dtype)
    base[::97] = float("nan")
    x = base[offset:].view(shape)
    exact(cuda().relu(x), torch.relu(x))
    y = torch.relu(x)
    dy = torch.randn_like(x)
    dy.view(-1)[::5] = float("nan")
    exact(cuda().relu_backward(dy, y), R.relu_backward(dy, y))
    exact(cuda().relu_backward(dy, y, guided=True), R.guided_relu_backward(dy, y))


@pytest.mark.parametrize("fmt", FORMATS)
def test_relu_keeps_layout(fmt):
    x = rand(2, 5, 3, 4, fmt=fmt)
    out = cuda().relu(x)
    assert out.stride() == x.stride()
    exact(out, torch.relu(x))


# --- global average pooling ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", [(2, 3, 7, 7), (3, 33, 1, 1), (2, 70, 13, 17), (1, 5, 56, 56)])
def test_global_avg_pool2d(dtype, fmt, shape):
    x = rand(*shape, dtype=dtype, fmt=fmt)
    poison_cache(x[:, :, 0, 0])
    out = cuda().global_avg_pool2d(x)
    assert out.shape == shape[:2]
    assert rel_err(out, x.double().mean((2, 3))) < TOL[dtype]
    dy = rand(*shape[:2], dtype=dtype)
    poison_cache(x)
    dx = cuda().global_avg_pool2d_backward(dy, x.shape, fmt == torch.channels_last)
    assert dx.is_contiguous(memory_format=fmt)
    ref = (dy.double() / (shape[2] * shape[3]))[:, :, None, None].expand(shape)
    assert rel_err(dx, ref) < TOL[dtype]


# --- max pooling -------------------------------------------------------------------------------

# (kernel_size, stride, padding, dilation, ceil_mode)
POOL_GEOMETRIES = [
    ((2, 2), (2, 2), (0, 0), (1, 1), False),
    ((3, 3), (2, 2), (1, 1), (1, 1), False),
    ((3, 3), (2, 2), (1, 1), (1, 1), True),
    ((3, 3), (1, 1), (1, 1), (2, 2), False),
    ((4, 4), (3, 3), (2, 2), (1, 1), True),
    ((3, 2), (2, 1), (1, 0), (1, 2), False),
    ((1, 4), (2, 3), (0, 2), (3, 1), True),
    ((16, 17), (1, 1), (8, 8), (1, 1), False),  # 272 taps: int32 offsets
]


def pool_input(shape, dtype, fmt, ties: bool) -> torch.Tensor:
    if ties:  # few distinct values: every window has ties, the first maximum must win
        x = torch.randint(-3, 3, shape, device="cuda").to(dtype)
    else:
        x = torch.randn(shape, device="cuda").to(dtype)
    flat = x.view(-1)
    flat[::53] = float("nan")
    return x.contiguous(memory_format=fmt)


def offsets_to_indices(offsets, geometry, W):
    """Plane positions of saved window offsets (r * kw + s), computed independently."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), _ = geometry
    n, c, ho, wo = offsets.shape
    off = offsets.long().cpu()
    oh = torch.arange(ho).view(1, 1, ho, 1)
    ow = torch.arange(wo).view(1, 1, 1, wo)
    ih = oh * sh - ph + off // kw * dh
    iw = ow * sw - pw + off % kw * dw
    return torch.where(off >= kh * kw, torch.full_like(off, -1), ih * W + iw)


@pytest.mark.parametrize("geometry", POOL_GEOMETRIES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool2d_forward(geometry, dtype, fmt, ties):
    x = pool_input((2, 5, 19, 18), dtype, fmt, ties)
    ref, ref_idx = F.max_pool2d(x.float().cpu().contiguous(), *geometry, return_indices=True)
    out, idx = cuda().max_pool2d(x, *geometry, return_indices=True)
    assert out.is_contiguous(memory_format=fmt) and idx.dtype == torch.int64
    exact(out.float(), ref)
    exact(idx, ref_idx)
    out2, offsets = cuda().max_pool2d(x, *geometry, return_indices=False)
    taps = geometry[0][0] * geometry[0][1]
    assert offsets.dtype == (torch.uint8 if taps < 256 else torch.int32)
    exact(out2, out)
    exact(offsets_to_indices(offsets, geometry, x.shape[3]), ref_idx)


@pytest.mark.parametrize("geometry", POOL_GEOMETRIES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("saved", ["offsets", "indices", "none"])
@pytest.mark.parametrize("deterministic", [False, True])
def test_max_pool2d_backward(geometry, dtype, fmt, saved, deterministic):
    x = pool_input((2, 4, 17, 15), dtype, fmt, ties=True)
    xr = x.double().cpu().contiguous().requires_grad_()
    ref_out = F.max_pool2d(xr, *geometry)
    dy = rand(*ref_out.shape, dtype=dtype, fmt=fmt)
    ref_out.backward(dy.double().cpu())
    out, s = cuda().max_pool2d(x, *geometry, return_indices=saved == "indices")
    poison_cache(x)
    dx = cuda().max_pool2d_backward(
        dy, x, None if saved == "none" else s, *geometry, deterministic=deterministic
    )
    assert dx.is_contiguous(memory_format=fmt)
    # Overlapping windows add gradients in another order than torch (float32 atomics).
    assert rel_err(dx, xr.grad) < (0 if dtype == torch.float32 else 1) * TOL[dtype] + 1e-6
    if deterministic:
        again = cuda().max_pool2d_backward(
            dy, x, None if saved == "none" else s, *geometry, deterministic=True
        )
        exact(again, dx)


def test_max_pool2d_backward_follows_torch_determinism_flag():
    geometry = ((3, 3), (1, 1), (1, 1), (1, 1), False)
    x = pool_input((1, 3, 9, 9), torch.float32, torch.contiguous_format, ties=True)
    out, s = cuda().max_pool2d(x, *geometry, return_indices=False)
    dy = torch.randn_like(out)
    try:
        torch.use_deterministic_algorithms(True)
        first = cuda().max_pool2d_backward(dy, x, s, *geometry)
        exact(cuda().max_pool2d_backward(dy, x, s, *geometry), first)
    finally:
        torch.use_deterministic_algorithms(False)


# --- convolution -------------------------------------------------------------------------------

# (N, C, H, W, K, (R, S), stride, pad_begin, pad_end, dilation, groups)
CONV_CASES = [
    (2, 3, 11, 13, 5, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 1),
    (2, 16, 9, 9, 24, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 1),
    (1, 3, 23, 21, 8, (7, 7), (2, 2), (3, 3), (3, 3), (1, 1), 1),  # stem
    (3, 20, 7, 6, 70, (1, 1), (1, 1), (0, 0), (0, 0), (1, 1), 1),  # 1x1
    (2, 8, 10, 11, 12, (3, 2), (1, 2), (2, 0), (1, 1), (2, 1), 2),  # asymmetric, grouped
    (2, 12, 9, 9, 12, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 12),  # depthwise
    (2, 6, 8, 8, 12, (3, 3), (2, 1), (1, 1), (0, 1), (1, 2), 3),
    (1, 70, 5, 5, 130, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 1),  # more than one tile
    (2, 6, 9, 8, 12, (3, 2), (2, 1), (1, 0), (1, 1), (1, 2), 6),  # depthwise, multiplier 2
    (3, 1, 10, 9, 5, (3, 3), (1, 2), (1, 1), (0, 1), (2, 1), 1),  # one input channel (direct)
    # Channels a multiple of 32: channels_last forwards on tensor cores take the pipelined
    # kernel. Positions and filters leave partial tiles (64- and 128-filter blocks), windows
    # cross the padding, strided and dilated.
    (2, 32, 9, 11, 40, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 1),
    (3, 64, 15, 14, 136, (3, 3), (2, 2), (1, 1), (0, 1), (1, 1), 1),
    (1, 96, 6, 7, 64, (3, 3), (1, 1), (2, 2), (2, 2), (2, 2), 1),
    (2, 32, 5, 6, 72, (1, 1), (1, 1), (0, 0), (0, 0), (1, 1), 1),
]


def conv_ref(x, w, b, case, relu=False):
    *_, stride, pad_begin, pad_end, dilation, groups = case
    xp = F.pad(x.double().cpu(), (pad_begin[1], pad_end[1], pad_begin[0], pad_end[0]))
    y = F.conv2d(
        xp, w.double().cpu(), None if b is None else b.double().cpu(), stride, 0, dilation, groups
    )
    return y.relu() if relu else y


def assert_torch_format(out, x, w, case):
    """``out`` is in the memory format torch's own conv gives for the same operands. A
    single-channel tensor asked for as channels_last can keep NCHW strides, which torch then
    reads as NCHW: the output follows torch, not the format the test asked for."""
    *_, stride, _, _, dilation, groups = case
    want = F.conv2d(x.float().cpu(), w.float().cpu(), None, stride, 0, dilation, groups)
    cl = torch.channels_last
    assert out.is_contiguous(memory_format=cl) == want.is_contiguous(memory_format=cl), (
        f"fastcnn strides {out.stride()}, torch strides {want.stride()}"
    )


def conv_args(case):
    *_, stride, pad_begin, pad_end, dilation, groups = case
    return stride, pad_begin, pad_end, dilation, groups


def tolerance(dtype, tf32):
    return TOL["tf32"] if dtype == torch.float32 and tf32 else TOL[dtype]


def conv_operands(case, dtype, fmt):
    n, c, h, w, k, (r, s), *_, groups = case
    x = rand(n, c, h, w, dtype=dtype, fmt=fmt)
    weight = (rand(k, c // groups, r, s, dtype=torch.float32, fmt=fmt) / math.sqrt(c * r * s)).to(
        dtype
    )
    return x, weight, rand(k, dtype=dtype)


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("tf32", [False, True], ids=["exact", "tf32"])
def test_conv2d_forward(case, dtype, fmt, tf32):
    if dtype != torch.float32 and tf32:
        pytest.skip("TF32 concerns float32 only")
    x, w, b = conv_operands(case, dtype, fmt)
    ref = conv_ref(x, w, b, case, relu=True)
    poison_cache(ref.to(dtype))
    out = cuda().conv2d(x, w, b, *conv_args(case), relu=True, allow_tf32=tf32)
    assert out.shape == ref.shape
    assert_torch_format(out, x, w, case)
    assert rel_err(out, ref) < tolerance(dtype, tf32)
    plain = cuda().conv2d(x, w, None, *conv_args(case), allow_tf32=tf32)
    assert rel_err(plain, conv_ref(x, w, None, case)) < tolerance(dtype, tf32)


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("tf32", [False, True], ids=["exact", "tf32"])
def test_conv2d_backward(case, dtype, fmt, tf32):
    if dtype != torch.float32 and tf32:
        pytest.skip("TF32 concerns float32 only")
    x, w, b = conv_operands(case, dtype, fmt)
    xr = x.double().cpu().requires_grad_()
    wr = w.double().cpu().requires_grad_()
    br = b.double().cpu().requires_grad_()
    *_, stride, pad_begin, pad_end, dilation, groups = case
    xp = F.pad(xr, (pad_begin[1], pad_end[1], pad_begin[0], pad_end[0]))
    ref = F.conv2d(xp, wr, br, stride, 0, dilation, groups)
    dy = rand(*ref.shape, dtype=dtype, fmt=fmt)
    ref.backward(dy.double().cpu())
    cl = fmt == torch.channels_last
    poison_cache(x)
    dx = cuda().conv2d_backward_input(dy, w, x.shape, cl, *conv_args(case), allow_tf32=tf32)
    assert dx.is_contiguous(memory_format=fmt)
    assert rel_err(dx, xr.grad) < tolerance(dtype, tf32)
    poison_cache(w)
    dw = cuda().conv2d_backward_weight(dy, x, w.shape, cl, *conv_args(case), allow_tf32=tf32)
    assert rel_err(dw, wr.grad) < tolerance(dtype, tf32)
    exact(cuda().conv2d_backward_weight(dy, x, w.shape, cl, *conv_args(case), allow_tf32=tf32), dw)
    db = cuda().conv2d_backward_bias(dy)
    assert rel_err(db, br.grad) < TOL[dtype]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "case",
    [
        (8, 16, 40, 40, 16, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 1),  # GEMM slices
        (3, 16, 40, 37, 32, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 16),  # depthwise, x2
        (4, 8, 33, 35, 8, (5, 5), (2, 2), (2, 2), (2, 2), (1, 1), 8),  # depthwise, stride 2
    ],
)
def test_conv2d_large_reduction_splits_deterministically(case, fmt):
    """Reductions long enough to be split over position slices (channels_last depthwise:
    several slices of 1024 positions), summed in a fixed order: right, and bit-identical when
    repeated."""
    x, w, _ = conv_operands(case, torch.float32, fmt)
    *_, stride, pad, _, dilation, groups = case
    ref_out = F.conv2d(x.double(), w.double(), None, stride, pad, dilation, groups)
    dy = rand(*ref_out.shape, fmt=fmt)
    cl = fmt == torch.channels_last
    args = (dy, x, w.shape, cl, *conv_args(case))
    dw = cuda().conv2d_backward_weight(*args, allow_tf32=False)
    ref = torch.nn.grad.conv2d_weight(
        x.double(), w.shape, dy.double(), stride, pad, dilation, groups
    )
    assert rel_err(dw, ref) < TOL[torch.float32]
    exact(cuda().conv2d_backward_weight(*args, allow_tf32=False), dw)


def test_conv2d_empty_batch():
    case = (0, 4, 6, 6, 5, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 1)
    x, w, b = conv_operands(case, torch.float32, torch.contiguous_format)
    assert cuda().conv2d(x, w, b, *conv_args(case)).shape == (0, 5, 6, 6)
    dy = rand(0, 5, 6, 6)
    dw = cuda().conv2d_backward_weight(dy, x, w.shape, False, *conv_args(case))
    exact(dw, torch.zeros_like(w))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("operands", ["image_off_grid", "weights_nchw"])
def test_conv2d_channels_last_outside_the_pipelined_kernel(dtype, operands):
    """A channels_last image one element past a 16-byte boundary, or weights in NCHW, leave
    the pipelined kernel's conditions: the tile-loading kernel gives the same answers."""
    case = CONV_CASES[-4]
    x, w, b = conv_operands(case, dtype, torch.channels_last)
    if operands == "image_off_grid":
        storage = torch.empty(x.numel() + 1, dtype=dtype, device=x.device)
        x = storage[1:].as_strided(x.shape, x.stride()).copy_(x)
        assert x.data_ptr() % 16 != 0
    else:
        w = w.contiguous()
    out = cuda().conv2d(x, w, b, *conv_args(case), relu=True, allow_tf32=True)
    assert rel_err(out, conv_ref(x, w, b, case, relu=True)) < tolerance(dtype, True)


def test_kernels_run_on_the_current_stream():
    case = CONV_CASES[1]
    x, w, b = conv_operands(case, torch.float32, torch.contiguous_format)
    expected = cuda().conv2d(x, w, b, *conv_args(case), allow_tf32=False)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out = cuda().conv2d(x, w, b, *conv_args(case), allow_tf32=False)
        pooled, _ = cuda().max_pool2d(out, (2, 2), (2, 2), (0, 0), (1, 1), False, False)
    torch.cuda.current_stream().wait_stream(side)
    exact(out, expected)
    exact(pooled, F.max_pool2d(expected, 2))


# --- errors ------------------------------------------------------------------------------------


def test_float64_is_rejected_with_a_clear_error():
    x = torch.randn(2, 3, 4, 4, device="cuda", dtype=torch.float64)
    with pytest.raises(TypeError, match="relu: input is float64.*float32, float16 or bfloat16"):
        cuda().relu(x)
    with pytest.raises(TypeError, match="conv2d: input is float64"):
        cuda().conv2d(x, x.new_ones(1, 3, 1, 1), None, (1, 1), (0, 0), (0, 0), (1, 1), 1)


def test_mixed_devices_are_rejected():
    x = rand(1, 3, 5, 5)
    w = torch.randn(4, 3, 3, 3)
    with pytest.raises(ValueError, match="conv2d: weight must be a CUDA tensor"):
        cuda().conv2d(x, w, None, (1, 1), (0, 0), (0, 0), (1, 1), 1)


def test_bad_shapes_name_the_argument():
    x = rand(1, 4, 5, 5)
    with pytest.raises(ValueError, match=r"conv2d: weight must be \[K, C/groups, R, S\]"):
        cuda().conv2d(x, rand(2, 3, 3, 3), None, (1, 1), (0, 0), (0, 0), (1, 1), 1)
    with pytest.raises(ValueError, match="max_pool2d: padding must be"):
        cuda().max_pool2d(x, (2, 2), (2, 2), (2, 2), (1, 1), False, False)


def test_enabled_needs_the_opt_in(monkeypatch):
    monkeypatch.delenv("FASTCNN_CUDA_UNVERIFIED", raising=False)
    assert not cuda().enabled()
    monkeypatch.setenv("FASTCNN_CUDA_UNVERIFIED", "1")
    assert cuda().enabled()


# ---------------------------------------------------------------------------------------------
# Through the public ops, nn layers and autograd (FASTCNN_CUDA_UNVERIFIED=1 routes CUDA
# tensors to the kernels above)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def cuda_ops(monkeypatch):
    monkeypatch.setenv("FASTCNN_CUDA_UNVERIFIED", "1")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


@pytest.mark.parametrize("fmt", FORMATS)
def test_public_ops_and_gradients_match_torch(cuda_ops, fmt):
    import fastcnn.ops as fo

    x = rand(4, 6, 13, 11, fmt=fmt).requires_grad_()
    w = rand(8, 6, 3, 3).requires_grad_()
    b = rand(8).requires_grad_()

    def ours(x, w, b):
        y = fo.conv2d(x, w, b, padding=1, activation="relu")
        y = fo.max_pool2d(y, 3, 2, 1)
        return fo.global_avg_pool2d(fo.relu(y)).sum()

    def theirs(x, w, b):
        y = F.relu(F.conv2d(x, w, b, padding=1))
        return F.adaptive_avg_pool2d(F.relu(F.max_pool2d(y, 3, 2, 1)), 1).sum()

    got = torch.autograd.grad(ours(x, w, b), (x, w, b))
    want = torch.autograd.grad(theirs(x, w, b), (x, w, b))
    for g, r in zip(got, want):
        assert g.device == r.device
        assert rel_err(g, r) < TOL[torch.float32]


def test_convert_runs_on_cuda(cuda_ops):
    from fastcnn.nn import convert

    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.AdaptiveAvgPool2d(1),
    ).cuda()  # fmt: skip
    x = rand(2, 3, 16, 16)
    assert rel_err(convert(model)(x), model(x)) < TOL[torch.float32]


def test_cuda_tensors_rejected_without_the_switch(monkeypatch):
    import fastcnn.ops as fo

    monkeypatch.delenv("FASTCNN_CUDA_UNVERIFIED", raising=False)
    with pytest.raises(RuntimeError, match="FASTCNN_CUDA_UNVERIFIED=1"):
        fo.relu(rand(4))
