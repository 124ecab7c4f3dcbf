"""Argument normalization and checks for the functional API, written once.

Every message names the op and the argument, says what was expected and what came:
``conv2d: weight must be 4-D [K, C/groups, R, S], got shape (3, 3)``.
"""

from __future__ import annotations

import torch

from . import _cuda
from ._boundary import unsupported_device
from ._op import PLAIN_TENSORS

_CPU_DTYPES = (torch.float32, torch.float64)
_CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _is_int(v) -> bool:
    return type(v) is int or (isinstance(v, (int, torch.SymInt)) and not isinstance(v, bool))


def pair(op: str, name: str, value, low: int) -> tuple[int, int]:
    """An int or a sequence of two ints (or one, repeated) as a pair, as torch's ``_pair``;
    each at least ``low``."""
    if type(value) is int or _is_int(value):  # the first test alone passes a plain int
        value = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) in (1, 2) and all(map(_is_int, value)):
        value = (value[0], value[-1])
    else:
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if value[0] < low or value[1] < low:
        raise ValueError(
            f"{op}: {name} must be >= {low}, got {value if value[0] != value[1] else value[0]}"
        )
    return value


def same_cpu_floats(t, *others) -> bool:
    """Whether ``t`` and ``others`` are plain CPU tensors of one supported dtype: the common
    case, which the checks below need not diagnose."""
    if type(t) not in PLAIN_TENSORS or not t.is_cpu or t.dtype not in _CPU_DTYPES:
        return False
    dtype = t.dtype
    for o in others:  # a loop, not all(...): no generator frame on every call
        if type(o) not in PLAIN_TENSORS or not o.is_cpu or o.dtype != dtype:
            return False
    return True


def tensor(op: str, name: str, t, ndim: int | tuple[int, ...] | None, layout: str = "") -> None:
    """``t`` is a floating-point tensor of a supported dtype and device with ``ndim`` dims
    (any number when None)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    if not (t.is_cpu and t.dtype in _CPU_DTYPES):  # else the common case: nothing to refuse
        _dtype_and_device(op, name, t)
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if ndims is not None and t.dim() not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims) + (f" {layout}" if layout else "")
        raise ValueError(f"{op}: {name} must be {want}, got shape {tuple(t.shape)}")


def _dtype_and_device(op: str, name: str, t: torch.Tensor) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating-point tensor, got {t.dtype}")
    if t.is_cuda and _cuda.enabled():
        if t.dtype not in _CUDA_DTYPES:
            raise TypeError(
                f"{op}: {name} must be float32, float16 or bfloat16 on CUDA, got {t.dtype}"
            )
    elif not (t.is_cpu or t.is_meta):  # meta: shape inference and tracing
        raise unsupported_device(op, name, t.device)
    elif t.dtype not in _CPU_DTYPES:
        raise TypeError(f"{op}: {name} must be float32 or float64 on the CPU, got {t.dtype}")


def same_kind(op: str, name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """``t`` has the dtype and device of ``ref``."""
    # Two is_cpu reads cost a quarter of comparing devices, which builds two device objects.
    if not (t.is_cpu and ref.is_cpu) and t.device != ref.device:
        raise ValueError(
            f"{op}: {name} must be on the device of {ref_name} ({ref.device}), got {t.device}"
        )
    if t.dtype != ref.dtype:
        raise TypeError(
            f"{op}: {name} must have the dtype of {ref_name} ({ref.dtype}), got {t.dtype}"
        )
