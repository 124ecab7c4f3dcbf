"""The compiled boundary, fastcnn._C, driven directly (past the Python checks).

Hypothesis builds a valid call of each kernel (random geometry, NCHW or channels_last,
storage offsets), then applies up to two mutations: another dtype or size, a non-dense,
overlapping or zero stride, a negative stride, a misaligned or null pointer, a CUDA device,
an object that is not a capsule, out-of-range geometry or threads. Every call must either
raise ValueError/TypeError or succeed with torch's answer; unmutated calls must succeed;
no call may write outside its outputs (guard elements around every tensor) or change its
inputs. Run under .ci/sanitize, AddressSanitizer also catches any out-of-bounds read.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch.utils.dlpack import to_dlpack

from fastcnn import _C
from fastcnn.ops import _reference as R
from fastcnn.ops._shapes import pool_out_size

I32 = 2**31 - 1
GUARD = 8  # guard elements before and after every tensor the kernels see
FLOATS = (torch.float32, torch.float64)
OTHER_DTYPES = [torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.uint8, torch.bool]
FUZZ = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- DLPack capsules built by hand, for what torch cannot export ---------------------------


class _Device(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _Device),
        ("ndim", ctypes.c_int32),
        ("dtype", _DType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class _Managed(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


class _ManagedVersioned(ctypes.Structure):
    _fields_ = [
        ("major", ctypes.c_uint32),
        ("minor", ctypes.c_uint32),
        ("ctx", ctypes.c_void_p),
        ("deleter", ctypes.c_void_p),
        ("flags", ctypes.c_uint64),
        ("dl_tensor", _DLTensor),
    ]


_new_capsule = ctypes.pythonapi.PyCapsule_New
_new_capsule.restype = ctypes.py_object
_new_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
# DLPack (type code, bits) of each dtype the fuzzer uses.
_CODES = {
    torch.float32: (2, 32),
    torch.float64: (2, 64),
    torch.float16: (2, 16),
    torch.bfloat16: (4, 16),
    torch.int64: (0, 64),
    torch.int32: (0, 32),
    torch.uint8: (1, 8),
    torch.bool: (6, 8),
}


class HandMade:
    """Capsules over described memory; keeps every structure alive until the test ends."""

    def __init__(self):
        self._alive = []

    def __call__(
        self,
        data: int | None,
        shape,
        strides=None,
        dtype=(2, 32, 1),
        device=(1, 0),
        version: tuple[int, int] | None = None,
    ):
        ndim = len(shape)
        sizes = (ctypes.c_int64 * max(ndim, 1))(*shape)
        steps = None if strides is None else (ctypes.c_int64 * max(ndim, 1))(*strides)
        t = _DLTensor(data, _Device(*device), ndim, _DType(*dtype), sizes, steps, 0)
        if version is None:
            m, name = _Managed(t, None, None), b"dltensor"
        else:
            m, name = _ManagedVersioned(*version, None, None, 0, t), b"dltensor_versioned"
        self._alive += [sizes, steps, m]
        return _new_capsule(ctypes.addressof(m), name, None)


@pytest.fixture
def handmade():
    return HandMade()


# --- Arguments: tensors in guarded buffers, and their mutations -----------------------------


def _sentinel(dtype: torch.dtype):
    return True if dtype == torch.bool else 77 if not dtype.is_floating_point else 1234.5


@dataclass
class Arg:
    """One tensor argument: what the kernel gets, and how to read and check it afterwards."""

    view: torch.Tensor | None  # torch memory the kernel sees (None: not torch memory)
    buf: torch.Tensor | None = None  # the guarded buffer `view` lies in
    lo: int = 0  # buf[lo:hi] may be addressed by view; the rest is guard
    hi: int = 0
    capsule_fn: object = None  # makes the capsule; default: to_dlpack(view)
    must_raise: bool = False  # no kernel may accept this argument

    def capsule(self):
        return self.capsule_fn() if self.capsule_fn else to_dlpack(self.view)

    def guards_intact(self) -> bool:
        if self.buf is None:
            return True
        s = _sentinel(self.buf.dtype)
        return bool((self.buf[: self.lo] == s).all() and (self.buf[self.hi :] == s).all())


def place(values: torch.Tensor | None, shape, strides, dtype, offset=0, byte_shift=0) -> Arg:
    """A view of `shape` and `strides` at `offset` in a buffer with guards on both sides,
    filled with `values` when given (else random), starting `byte_shift` bytes past an
    element boundary (a misaligned pointer when nonzero)."""
    span = 1 + sum((n - 1) * s for n, s in zip(shape, strides)) if 0 not in shape else 0
    lo, hi = GUARD + offset, GUARD + offset + span
    total = hi + GUARD
    if byte_shift:
        raw = bytearray(total * _itemsize(dtype) + byte_shift)
        buf = torch.frombuffer(raw, dtype=dtype, offset=byte_shift, count=total)
    else:
        buf = torch.empty(total, dtype=dtype)
    buf.fill_(_sentinel(dtype))
    view = buf.as_strided(shape, strides, lo)
    if span:
        buf[lo:hi] = _random(hi - lo, dtype)
    if values is not None and span:
        # Through each element's buffer index: copy_ refuses a view whose elements overlap
        # (a stride-0 mutation), where an index assignment writes each location.
        where = torch.arange(total).as_strided(shape, strides, lo)
        buf[where.reshape(-1)] = values.to(dtype).reshape(-1)
    return Arg(view, buf, lo, hi)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _random(n: int, dtype: torch.dtype) -> torch.Tensor:
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(n).to(dtype)
    return torch.randint(0, 2 if dtype == torch.bool else 50, (n,)).to(dtype)


def dense_strides(shape, channels_last: bool) -> tuple:
    fmt = torch.channels_last if channels_last and len(shape) == 4 else torch.contiguous_format
    return torch.empty(shape, device="meta", memory_format=fmt).stride()


def tensor(values: torch.Tensor, channels_last=False, offset=0) -> Arg:
    return place(
        values, values.shape, dense_strides(values.shape, channels_last), values.dtype, offset
    )


def output(shape, dtype, channels_last=False, offset=0) -> Arg:
    return place(None, shape, dense_strides(shape, channels_last), dtype, offset)


# --- Calls ----------------------------------------------------------------------------------


class Invalid(Exception):
    """The reference finds the call inconsistent: the kernel must have raised."""


@dataclass
class Call:
    fn: str
    args: dict  # name -> Arg or None (tensor arguments)
    params: dict  # name -> plain value
    outputs: tuple  # names of the tensors the kernel writes
    reference: object  # (values: dict, params: dict) -> {output name: expected tensor}
    mutations: list = field(default_factory=list)

    def run(self):
        kwargs = {k: (None if a is None else a.capsule()) for k, a in self.args.items()}
        return getattr(_C, self.fn)(**kwargs, **self.params)


def values(call: Call) -> dict:
    return {k: None if a is None else a.view for k, a in call.args.items()}


def need(cond: bool, why: str = "") -> None:
    if not cond:
        raise Invalid(why)


def floats(*ts: torch.Tensor) -> None:
    need(all(t.dtype == ts[0].dtype for t in ts) and ts[0].dtype in FLOATS, "dtype")


# References: each validates what the kernel must validate, then computes with torch.


def ref_relu(v, p):
    x, y = v["input"], v["output"]
    floats(x, y)
    need(x.dim() == 1 and y.shape == x.shape)
    return {"output": torch.relu(x)}


def ref_relu_backward(v, p):
    dy, y, dx = v["grad_output"], v["output"], v["grad_input"]
    floats(dy, y, dx)
    need(dy.dim() == 1 and y.shape == dy.shape and dx.shape == dy.shape)
    g = torch.where(y <= 0, torch.zeros_like(dy), dy)
    return {"grad_input": g.clamp(min=0) if p["guided"] else g}


def ref_gap(v, p):
    x, y = v["input"], v["output"]
    floats(x, y)
    need(x.dim() == 4 and y.shape == x.shape[:2])
    need(x.shape[2] * x.shape[3] > 0 or y.numel() == 0)
    return {"output": x.double().mean((2, 3)).to(x.dtype)}


def ref_gap_backward(v, p):
    dy, dx = v["grad_output"], v["grad_input"]
    floats(dy, dx)
    need(dx.dim() == 4 and dy.shape == dx.shape[:2])
    hw = dx.shape[2] * dx.shape[3]
    need(hw > 0 or dy.numel() == 0)
    return {"grad_input": (dy / max(hw, 1))[:, :, None, None].expand(dx.shape)}


def _conv_geometry(p) -> None:
    need(all(1 <= s <= I32 for s in (*p["stride"], *p["dilation"])), "stride/dilation")
    need(all(0 <= s <= I32 for s in (*p["pad_begin"], *p["pad_end"])), "padding")
    need(p["groups"] >= 1, "groups")


def _conv(x, w, p):
    (pbh, pbw), (peh, pew) = p["pad_begin"], p["pad_end"]
    assume(max(pbh, pbw, peh, pew) <= 64)  # a huge padding accepted: too big to pad for torch
    need(x.dim() == 4 and w.dim() == 4 and w.shape[0] >= 1 and min(x.shape[1], *w.shape[1:]) >= 1)
    try:
        return F.conv2d(
            F.pad(x, (pbw, pew, pbh, peh)), w, None, p["stride"], 0, p["dilation"], p["groups"]
        )
    except RuntimeError as e:
        raise Invalid(str(e)) from e


def ref_conv_forward(v, p):
    x, w, b, y = v["input"], v["weight"], v["bias"], v["output"]
    floats(x, w, y, *([] if b is None else [b]))
    _conv_geometry(p)
    out = _conv(x, w, p)
    need(out.shape == y.shape)
    if b is not None:
        need(b.shape == (w.shape[0],))
        out = out + b[None, :, None, None]
    return {"output": out.clamp(min=0) if p["relu"] else out}


def _conv_grads(x, w, dy, p, want: str):
    x, w = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    out = _conv(x, w, p)
    need(out.shape == dy.shape)
    out.backward(dy)
    return x.grad if want == "input" else w.grad


def ref_conv_backward_input(v, p):
    dy, w, dx = v["grad_output"], v["weight"], v["grad_input"]
    floats(dy, w, dx)
    _conv_geometry(p)
    return {"grad_input": _conv_grads(torch.zeros_like(dx), w, dy, p, "input")}


def ref_conv_backward_weight(v, p):
    dy, x, dw = v["grad_output"], v["input"], v["grad_weight"]
    floats(dy, x, dw)
    _conv_geometry(p)
    return {"grad_weight": _conv_grads(x, torch.zeros_like(dw), dy, p, "weight")}


def ref_conv_backward_bias(v, p):
    dy, db = v["grad_output"], v["grad_bias"]
    floats(dy, db)
    need(dy.dim() == 4 and db.shape == dy.shape[1:2])
    return {"grad_bias": dy.double().sum((0, 2, 3)).to(dy.dtype)}


def _pool(x, p):
    """The reference's output and indices (-1 for a window holding no input element)."""
    need(x.dim() == 4)
    need(all(1 <= s <= I32 for s in (*p["kernel_size"], *p["stride"], *p["dilation"])))
    need(all(0 <= s <= k // 2 for s, k in zip(p["padding"], p["kernel_size"])))
    assume(max(*p["kernel_size"], *p["stride"], *p["dilation"]) <= 64)  # the reference loops
    geometry = (p["kernel_size"], p["stride"], p["padding"], p["dilation"], bool(p["ceil_mode"]))
    n, c, h, w = x.shape
    need(
        min(pool_out_size(s, *g) for s, g in zip((h, w), zip(*geometry[:4], (geometry[4],) * 2)))
        >= 1
    )
    return R.max_pool2d(x, *geometry, return_indices=True)


def _window_origins(out_shape, p):
    """Each output's window origin (row, column), padding included, as [Ho, 1] and [1, Wo]."""
    (sh, sw), (ph, pw) = p["stride"], p["padding"]
    return (
        torch.arange(out_shape[2]).view(-1, 1) * sh - ph,
        torch.arange(out_shape[3]).view(1, -1) * sw - pw,
    )


def _window_taps(idx, w, out_shape, p):
    """Plane positions (flat h * w + w) as window offsets: each one's tap in its window."""
    rows, cols = _window_origins(out_shape, p)
    return ((idx // w - rows) * p["kernel_size"][1] + idx % w - cols).to(torch.uint8)


def _keeps_offsets(x, y, p) -> bool:
    """Whether the kernels take uint8 window offsets for this call (``keeps_offsets`` in
    max_pool2d.cpp): rows contiguous in the input and the output, 2x2 stride-2 windows that
    tile the input or 3x3 stride-2 windows with at most 512 outputs a row."""
    k, s, d = (tuple(p[key]) for key in ("kernel_size", "stride", "dilation"))
    rows = all(t.numel() == 0 or t.is_contiguous() for t in (x, y))
    if not rows or s != (2, 2) or d != (1, 1):
        return False
    if k == (2, 2):
        return tuple(p["padding"]) == (0, 0) and all(
            2 * o <= i for o, i in zip(y.shape[2:], x.shape[2:])
        )
    return k == (3, 3) and y.shape[3] <= 512


def _saved_argmax(idx, x, out, p):
    """What the backward takes as the argmax: int64 plane positions, or uint8 window offsets
    (the tap r * kw + s of each window) where they are kept, converted to positions."""
    need(idx.shape == out.shape)
    if idx.dtype == torch.uint8:
        need(_keeps_offsets(x, out, p))
        (kh, kw), (h, w) = p["kernel_size"], x.shape[2:]
        rows, cols = _window_origins(out.shape, p)
        t = idx.long()
        ih, iw = rows + t // kw, cols + t % kw
        inside = (t < kh * kw) & (ih >= 0) & (ih < h) & (iw >= 0) & (iw < w)
        need(bool(inside.all()), "window offsets out of range")
        return ih * w + iw
    need(idx.dtype == torch.int64)
    need(bool(((idx >= -1) & (idx < x.shape[2] * x.shape[3])).all()), "indices out of range")
    return idx


def ref_pool_forward(v, p):
    x, y, idx = v["input"], v["output"], v["indices"]
    floats(x, y)
    out, expected_idx = _pool(x, p)
    need(out.shape == y.shape)
    expected = {"output": out}
    if idx is not None:
        need(idx.shape == y.shape and idx.dtype in (torch.int64, torch.uint8))
        if idx.dtype == torch.int64:
            expected["indices"] = expected_idx
        else:
            need(_keeps_offsets(x, y, p))
            expected["indices"] = _window_taps(expected_idx, x.shape[3], y.shape, p)
    return expected


def ref_pool_backward(v, p):
    dy, x, idx, dx = v["grad_output"], v["input"], v["indices"], v["grad_input"]
    floats(dy, x, dx)
    out, argmax = _pool(x, p)
    need(out.shape == dy.shape and dx.shape == x.shape)
    if idx is not None:
        argmax = _saved_argmax(idx, x, dy, p)
    return {"grad_input": R.max_pool2d_backward(dy, x, argmax)}


# --- Valid calls ------------------------------------------------------------------------------


@st.composite
def layout(draw):
    return draw(st.booleans()), draw(st.integers(0, 3))  # channels_last, storage offset


@st.composite
def relu_call(draw):
    n = draw(st.one_of(st.integers(0, 300), st.just(140_001)))  # 140,001: several threads
    dtype = draw(st.sampled_from(FLOATS))
    off = draw(st.integers(0, 3))
    if draw(st.booleans()):
        return Call(
            "relu_forward",
            {
                "input": tensor(torch.randn(n, dtype=dtype), offset=off),
                "output": output((n,), dtype),
            },
            {"threads": draw(st.integers(1, 4))},
            ("output",),
            ref_relu,
        )
    guided = draw(st.booleans())
    args = {
        "grad_output": tensor(torch.randn(n, dtype=dtype), offset=off),
        "output": tensor(torch.randn(n, dtype=dtype).clamp(min=0)),
        "grad_input": output((n,), dtype, offset=off),
    }
    params = {"guided": guided, "threads": draw(st.integers(1, 4))}
    return Call("relu_backward", args, params, ("grad_input",), ref_relu_backward)


@st.composite
def gap_call(draw):
    n, c = draw(st.integers(0, 3)), draw(st.integers(0, 300))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    dtype = draw(st.sampled_from(FLOATS))
    cl, off = draw(layout())
    threads = {"threads": draw(st.integers(1, 4))}
    if draw(st.booleans()):
        args = {
            "input": tensor(torch.randn(n, c, h, w, dtype=dtype), cl, off),
            "output": output((n, c), dtype),
        }
        return Call("global_avg_pool2d_forward", args, threads, ("output",), ref_gap)
    args = {
        "grad_output": tensor(torch.randn(n, c, dtype=dtype)),
        "grad_input": output((n, c, h, w), dtype, cl, off),
    }
    return Call("global_avg_pool2d_backward", args, threads, ("grad_input",), ref_gap_backward)


@st.composite
def conv_call(draw):
    dtype = draw(st.sampled_from(FLOATS))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg, kg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if draw(st.booleans()):  # depthwise-style: one input channel per group
        cg = 1
    n, c, k = draw(st.integers(0, 2)), cg * groups, kg * groups
    r, s = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pad_begin = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    pad_end = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    h = draw(st.integers(max(1, dilation[0] * (r - 1) + 1 - sum(pad_begin[:1] + pad_end[:1])), 8))
    w = draw(st.integers(max(1, dilation[1] * (s - 1) + 1 - pad_begin[1] - pad_end[1]), 8))
    ho = (h + pad_begin[0] + pad_end[0] - dilation[0] * (r - 1) - 1) // stride[0] + 1
    wo = (w + pad_begin[1] + pad_end[1] - dilation[1] * (s - 1) - 1) // stride[1] + 1
    (xcl, xoff), (wcl, woff), (ycl, yoff) = draw(layout()), draw(layout()), draw(layout())
    params = {
        "stride": stride,
        "pad_begin": pad_begin,
        "pad_end": pad_end,
        "dilation": dilation,
        "groups": groups,
    }
    x = torch.randn(n, c, h, w, dtype=dtype)
    wt = torch.randn(k, cg, r, s, dtype=dtype)
    dy = torch.randn(n, k, ho, wo, dtype=dtype)
    threads = draw(st.integers(1, 4))
    which = draw(st.sampled_from(["forward", "backward_input", "backward_weight", "backward_bias"]))
    if which == "backward_bias":
        args = {"grad_output": tensor(dy, ycl, yoff), "grad_bias": output((k,), dtype)}
        return Call(
            "conv2d_backward_bias",
            args,
            {"threads": threads},
            ("grad_bias",),
            ref_conv_backward_bias,
        )
    if which == "forward":
        bias = tensor(torch.randn(k, dtype=dtype)) if draw(st.booleans()) else None
        image, weight, out = (
            tensor(x, xcl, xoff),
            tensor(wt, wcl, woff),
            output(dy.shape, dtype, ycl, yoff),
        )
        args = {"input": image, "weight": weight, "bias": bias, "output": out}
        params = {**params, "relu": draw(st.booleans())}
        outputs, ref = ("output",), ref_conv_forward
    elif which == "backward_input":
        image, weight, out = (
            output(x.shape, dtype, xcl, xoff),
            tensor(wt, wcl, woff),
            tensor(dy, ycl, yoff),
        )
        args = {"grad_output": out, "weight": weight, "grad_input": image}
        outputs, ref = ("grad_input",), ref_conv_backward_input
    else:
        image, weight, out = (
            tensor(x, xcl, xoff),
            output(wt.shape, dtype, wcl, woff),
            tensor(dy, ycl, yoff),
        )
        args = {"grad_output": out, "input": image, "grad_weight": weight}
        outputs, ref = ("grad_weight",), ref_conv_backward_weight
    geometry = [params[k] for k in ("stride", "pad_begin", "pad_end", "dilation", "groups")]
    nbytes = _C.conv2d_workspace(
        which,
        to_dlpack(image.view),
        to_dlpack(weight.view),
        to_dlpack(out.view),
        *geometry,
        threads,
    )
    args["workspace"] = Arg(torch.empty(nbytes, dtype=torch.uint8))
    return Call(f"conv2d_{which}", args, {**params, "threads": threads}, outputs, ref)


@st.composite
def pool_call(draw):
    dtype = draw(st.sampled_from(FLOATS))
    if draw(st.integers(0, 3)):
        kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    else:  # 2x2 or 3x3 windows of stride 2, which may keep window offsets
        kernel, stride, dilation = (draw(st.sampled_from([(2, 2), (3, 3)])), (2, 2), (1, 1))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    ceil_mode = draw(st.booleans())
    n, c = draw(st.integers(0, 2)), draw(st.integers(1, 5))
    h = draw(st.integers(max(1, dilation[0] * (kernel[0] - 1) + 1 - 2 * padding[0]), 8))
    w = draw(st.integers(max(1, dilation[1] * (kernel[1] - 1) + 1 - 2 * padding[1]), 8))
    x = torch.randn(n, c, h, w, dtype=dtype)
    params = {
        "kernel_size": kernel,
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "ceil_mode": ceil_mode,
    }
    out, idx = R.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    cl, off = draw(layout())
    fmt = torch.channels_last if cl else torch.contiguous_format
    # No indices, int64 plane positions, or uint8 window offsets where the kernels keep them.
    kinds = [None, torch.int64]
    if _keeps_offsets(x.contiguous(memory_format=fmt), out.contiguous(memory_format=fmt), params):
        kinds.append(torch.uint8)
    kind = draw(st.sampled_from(kinds))
    threads = {"threads": draw(st.integers(1, 4))}
    if draw(st.booleans()):
        args = {
            "input": tensor(x, cl, off),
            "output": output(out.shape, dtype, cl),
            "indices": output(out.shape, kind, cl) if kind else None,
        }
        outs = ("output", "indices") if kind else ("output",)
        return Call("max_pool2d_forward", args, {**params, **threads}, outs, ref_pool_forward)
    saved = idx if kind != torch.uint8 else _window_taps(idx, x.shape[3], out.shape, params)
    args = {
        "grad_output": tensor(torch.randn(out.shape, dtype=dtype), cl),
        "input": tensor(x, cl, off),
        "indices": tensor(saved, cl) if kind else None,
        "grad_input": output(x.shape, dtype, cl, off),
    }
    return Call(
        "max_pool2d_backward", args, {**params, **threads}, ("grad_input",), ref_pool_backward
    )


# --- Mutations ------------------------------------------------------------------------------

BAD_INTS = [0, -1, -(2**31), I32, I32 + 1, 2**62, 2**63 - 1, -(2**63)]


@st.composite
def mutate_tensor(draw, arg: Arg, handmade: HandMade) -> Arg:
    t = arg.view
    kind = draw(
        st.sampled_from(
            [
                "dtype",
                "size",
                "ndim",
                "transpose",
                "slice",
                "expand",
                "overlap",
                "misalign",
                "negative",
                "null",
                "cuda",
                "not_capsule",
                "used",
                "empty",
            ]
        )
    )
    shape, dtype = list(t.shape), t.dtype
    if kind == "dtype":
        new = draw(st.sampled_from([d for d in [*FLOATS, *OTHER_DTYPES] if d != dtype]))
        return tensor(t.detach().to(new))
    if kind == "size" and shape:
        d = draw(st.integers(0, len(shape) - 1))
        shape[d] = max(0, shape[d] + draw(st.sampled_from([-1, 1, 2])))
        return output(tuple(shape), dtype, draw(st.booleans()))
    if kind == "ndim":
        new = t.unsqueeze(0) if draw(st.booleans()) or t.dim() < 2 else t.flatten(0, 1)
        return tensor(new.contiguous())
    if kind == "transpose" and t.dim() >= 2:
        a, b = draw(st.permutations(range(t.dim())))[:2]
        moved = t.transpose(a, b)
        return place(moved, moved.shape, moved.stride(), dtype, draw(st.integers(0, 2)))
    if kind == "slice" and shape:
        d = draw(st.integers(0, len(shape) - 1))
        strides = list(dense_strides(shape, False))
        strides = [s * 2 if i <= d else s for i, s in enumerate(strides)]
        return place(t, shape, strides, dtype)
    if kind == "expand" and shape:
        d = draw(st.integers(0, len(shape) - 1))
        strides = list(dense_strides(shape, draw(st.booleans())))
        strides[d] = 0
        return place(None, shape, strides, dtype)
    if kind == "overlap" and shape:
        strides = [max(0, s - 1) for s in dense_strides(shape, draw(st.booleans()))]
        return place(None, shape, strides, dtype)
    if kind == "misalign" and dtype.itemsize > 1:
        new = place(
            t,
            shape,
            dense_strides(shape, False),
            dtype,
            byte_shift=draw(st.integers(1, dtype.itemsize - 1)),
        )
        new.must_raise = new.view.numel() > 0
        return new
    if kind == "negative" and any(n > 1 for n in shape) and dtype in FLOATS:
        arr = np.ascontiguousarray(t.detach().numpy())
        d = draw(st.sampled_from([i for i, n in enumerate(shape) if n > 1]))
        flipped = np.flip(arr, d)
        empty = torch.zeros(shape, dtype=dtype)  # read back as this when accepted (numel 0)
        return Arg(empty, capsule_fn=lambda: flipped.__dlpack__(), must_raise=t.numel() > 0)
    if kind in ("null", "cuda"):
        code = _CODES[dtype]
        device = (2, 0) if kind == "cuda" else (1, 0)
        ptr = 0 if kind == "null" else 1 << 40  # never dereferenced
        cap = lambda: handmade(ptr, shape, t.stride(), (*code, 1), device)  # noqa: E731
        # Read back (when accepted) as the empty tensor it describes.
        return Arg(
            torch.zeros(shape, dtype=dtype),
            capsule_fn=cap,
            must_raise=kind == "cuda" or t.numel() > 0,
        )
    if kind == "not_capsule":
        # An array rather than a capsule (float32: numpy has no bfloat16).
        array = t.detach().to(torch.float32).numpy()
        obj = draw(st.sampled_from([t, 0, "capsule", array]))
        return Arg(None, capsule_fn=lambda: obj, must_raise=True)
    if kind == "used":

        def used():
            c = to_dlpack(t.detach())
            torch.from_dlpack(c)
            return c

        return Arg(None, capsule_fn=used, must_raise=True)
    shape[0] = 0  # "empty", and the kinds above that do not apply to this tensor
    return output(tuple(shape), dtype)


@st.composite
def mutate_param(draw, value):
    if value is None or isinstance(value, bool):
        return draw(st.sampled_from([not value, 2, None]))
    if isinstance(value, tuple):
        i = draw(st.integers(0, 1))
        new = list(value)
        new[i] = draw(st.one_of(st.sampled_from(BAD_INTS), st.integers(value[i] - 2, value[i] + 2)))
        return tuple(new)
    return draw(st.one_of(st.sampled_from(BAD_INTS), st.integers(value - 2, value + 2)))


@st.composite
def mutated(draw, call_strategy, handmade: HandMade) -> Call:
    call = draw(call_strategy)
    for _ in range(draw(st.sampled_from([0, 1, 1, 2]))):
        tensors = [k for k, a in call.args.items() if a is not None and a.view is not None]
        name = draw(st.sampled_from(tensors + list(call.params)))
        if name in call.params:
            call.params[name] = draw(mutate_param(call.params[name]))
        else:
            call.args[name] = draw(mutate_tensor(call.args[name], handmade))
        call.mutations.append(name)
    return call


def check(call: Call) -> None:
    before = {
        k: a.view.clone() for k, a in call.args.items() if a is not None and a.view is not None
    }
    try:
        call.run()
        error = None
    except (ValueError, TypeError) as e:
        error = e
    for k, a in call.args.items():
        if a is not None:
            assert a.guards_intact(), f"{call.fn} wrote outside {k} ({call.mutations})"
        if k in before and k not in call.outputs and k != "workspace":
            assert torch.equal(a.view, before[k]), f"{call.fn} changed its input {k}"
    if error is not None:
        assert call.mutations, f"{call.fn} rejected a valid call: {error}"
        assert str(error)
        return
    assert not any(a.must_raise for a in call.args.values() if a is not None), (
        f"{call.fn} accepted an unusable argument ({call.mutations})"
    )
    try:
        expected = call.reference(values(call), call.params)
    except Invalid as e:
        raise AssertionError(f"{call.fn} accepted an invalid call ({call.mutations}): {e}") from e
    for name, want in expected.items():
        got = call.args[name].view
        tol = {"rtol": 1e-4, "atol": 1e-4} if got.dtype == torch.float32 else {}
        torch.testing.assert_close(
            got, want, **tol, msg=lambda m, name=name: f"{call.fn} {name} ({call.mutations}): {m}"
        )


@pytest.mark.parametrize(
    "make", [relu_call, gap_call, conv_call, pool_call], ids=lambda f: f.__name__
)
def test_fuzz_boundary(make, handmade):
    @FUZZ
    @given(data=st.data())
    def run(data):
        check(data.draw(mutated(make(), handmade)))

    run()


# --- The same boundary, case by case: one message per kind of bad argument -------------------

F32 = (2, 32, 1)


@pytest.mark.parametrize(
    "describe, error, message",
    [
        (dict(shape=[-1]), ValueError, "input has a negative size -1"),
        (dict(shape=[2**62, 2**62], strides=[0, 0]), ValueError, "input is too large"),
        (dict(shape=[3], strides=[2**62]), ValueError, "input is too large"),
        (dict(shape=[3], strides=[-(2**63)]), ValueError, "input is too large"),
        (dict(shape=[1] * 5), ValueError, "input must have at most 4 dimensions, got 5"),
        (dict(shape=[4], dtype=(2, 32, 4)), TypeError, "input has a dtype no kernel takes"),
        (dict(shape=[4], dtype=(5, 64, 1)), TypeError, "input has a dtype no kernel takes"),
        (dict(shape=[4], device=(4, 0)), ValueError, "input is on an unsupported device"),
        (dict(shape=[4], device=(2, 0)), ValueError, "input must be a CPU tensor"),
        (dict(shape=[4], version=(2, 0)), ValueError, "input is a DLPack 2.x capsule"),
        (dict(shape=[4], null=True), ValueError, "input has a null data pointer"),
        (dict(shape=[4], shift=1), ValueError, "input data pointer is not aligned"),
    ],
)
def test_each_bad_capsule_raises(handmade, describe, error, message):
    backing = torch.zeros(64)
    describe = dict(describe)
    ptr = 0 if describe.pop("null", False) else backing.data_ptr() + describe.pop("shift", 0)
    shape = describe.pop("shape")
    cap = handmade(
        ptr, shape, describe.pop("strides", None), describe.pop("dtype", F32), **describe
    )
    with pytest.raises(error, match=f"relu: {message}"):
        _C.relu_forward(cap, to_dlpack(torch.empty(4)), 1)


def test_null_pointer_of_an_empty_tensor_is_accepted(handmade):
    _C.relu_forward(handmade(None, [0]), handmade(None, [0]), 1)


@pytest.mark.parametrize("fn", ["conv_out_size", "pool_out_size"])
@pytest.mark.parametrize(
    "args, name",
    [
        ((5, 3, 0, 0, 1), "stride"),  # a division by zero before these were checked
        ((5, 0, 1, 0, 1), "kernel"),
        ((5, 3, 1, -1, 1), "padding"),
        ((5, 3, 1, 0, 0), "dilation"),
        ((5, 2**31, 1, 0, 2**31), "kernel"),  # dilation * (kernel - 1) would overflow int64
        ((-1, 3, 1, 0, 1), "size"),
        ((2**62, 3, 1, 0, 1), "size"),
    ],
)
def test_size_queries_validate_their_arguments(fn, args, name):
    extra = (False,) if fn == "pool_out_size" else ()
    with pytest.raises(ValueError, match=f"{fn}: {name} must be in"):
        getattr(_C, fn)(*args, *extra)


@pytest.mark.parametrize("name", ["stride", "padding", "dilation", "kernel_size"])
def test_geometry_past_32_bits_raises(name):
    x, y = torch.randn(1, 1, 4, 4), torch.empty(1, 1, 2, 2)
    geometry = {"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0), "dilation": (1, 1)}
    geometry[name] = (1, 2**40)
    with pytest.raises(ValueError, match=rf"max_pool2d: {name} must be at most 2147483647"):
        _C.max_pool2d_forward(
            to_dlpack(x), to_dlpack(y), None, **geometry, ceil_mode=False, threads=1
        )


@pytest.mark.parametrize("threads", [0, -1])
def test_threads_below_one_raise(threads):
    x = torch.randn(8)
    with pytest.raises(ValueError, match=f"relu: threads must be >= 1, got {threads}"):
        _C.relu_forward(to_dlpack(x), to_dlpack(torch.empty(8)), threads)
