"""The boundary between the custom ops and the compiled kernels, written once.

Tensors cross as DLPack capsules (pointer, sizes, strides, dtype, device) so the kernels
stay free of torch headers; outputs and workspace are allocated here with torch, so the
caching allocator and memory formats are respected.
"""

from __future__ import annotations

import os
import threading

import torch
from torch.utils.dlpack import to_dlpack

from .._extension import _C
from .._info import cuda_targets

__all__ = [
    "_C",
    "capsule",
    "dense",
    "flat",
    "fresh_output",
    "is_channels_last",
    "memory_format",
    "threads",
    "unsupported_device",
    "workspace",
]


def unsupported_device(op: str, name: str, device: torch.device) -> RuntimeError:
    """The error for a tensor on a device the ops do not run on: every device but the CPU,
    unless CUDA kernels were compiled and enabled (``FASTCNN_CUDA_UNVERIFIED=1``: they have
    not yet been verified on a GPU)."""
    build = (
        f"this build's CUDA kernels, for {cuda_targets(_C.cuda_archs.split(','))}, are not yet "
        "verified on a GPU and stay off unless FASTCNN_CUDA_UNVERIFIED=1 is set"
        if _C.cuda_compiled
        else "this is a CPU-only build"
    )
    kind = "verified CUDA" if device.type == "cuda" else device.type.upper()
    return RuntimeError(
        f"{op}: {name} is on {device}, but fastcnn has no {kind} kernels yet "
        f"({build}); its ops take CPU tensors only: move the tensors to the CPU with .cpu()"
    )


def capsule(t: torch.Tensor | None):
    """A DLPack capsule over ``t`` (``None`` passes through); the tensor must outlive the call."""
    return None if t is None else to_dlpack(t)


# glibc maps every block of 32 MiB or more afresh (its largest mmap threshold) and unmaps it
# on free, so each such output takes a page fault per 4 KiB it writes: 25k faults and about
# 40 ms of system time for a 103 MB gradient. Backed by 2 MiB transparent huge pages it takes
# 512 times fewer. Smaller blocks are recycled from the heap without faults and left alone.
# FASTCNN_HUGE_PAGES=0 leaves all memory as torch maps it.
_HUGE_PAGE_OUTPUTS = os.environ.get("FASTCNN_HUGE_PAGES", "1") != "0"
_HUGE_PAGE_MIN_BYTES = 32 << 20


def fresh_output(t: torch.Tensor) -> torch.Tensor:
    """``t``, a CPU output just allocated for a kernel to write in full, with its memory
    advised for transparent huge pages when it is large (before anything touches it)."""
    if _HUGE_PAGE_OUTPUTS and t.nbytes >= _HUGE_PAGE_MIN_BYTES:
        _C.advise_huge_pages(t.data_ptr(), t.nbytes)
    return t


# The CPU kernels use as many threads as torch does, so the two never fight over cores.
threads = torch.get_num_threads


def is_channels_last(t: torch.Tensor) -> bool:
    """Whether torch would treat ``t`` as channels_last (``suggest_memory_format``): its
    strides order the dimensions C, W, H, N from fastest to slowest. Ambiguous layouts
    (size-1 dimensions) resolve as torch resolves them; outputs follow this rule."""
    if t.dim() != 4:
        return False
    channels_last = t.is_contiguous(memory_format=torch.channels_last)
    if channels_last != t.is_contiguous():
        return channels_last  # dense in exactly one format: no ambiguity to resolve
    if t.stride(1) == 0:
        return False
    low = 0
    for d in (1, 3, 2, 0):
        size, stride = t.shape[d], t.stride(d)
        if size == 0 or stride < low or (d == 0 and low == t.stride(1)):
            return False
        low = stride * size if size > 1 else stride
    return True


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def flat(t: torch.Tensor) -> torch.Tensor:
    """A dense tensor of any layout as the 1-D run of memory it occupies."""
    return t.view(-1) if t.is_contiguous() else t.as_strided((t.numel(),), (1,))


def dense(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when laid out as NCHW or NHWC; otherwise a contiguous copy."""
    if t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)):
        return t
    return t.contiguous()


class _Workspace(threading.local):
    """The CPU workspace provider the conv bindings call with the byte count they need: each
    thread keeps one buffer of up to ``_KEEP`` bytes and its capsule, so a small call neither
    allocates nor makes a capsule (a kernel releases the GIL, so threads cannot share one).
    Larger workspaces are allocated per call: their kernels take far longer than that."""

    _KEEP = 1 << 20

    def __init__(self):
        self.kept = (-1, None)  # (bytes, capsule): one thread-local read per call, not two

    def __call__(self, nbytes: int):
        kept_bytes, kept = self.kept
        if nbytes <= kept_bytes:
            return kept
        fresh = capsule(torch.empty(nbytes, dtype=torch.uint8))
        if nbytes <= self._KEEP:
            self.kept = (nbytes, fresh)
        return fresh


workspace = _Workspace()
