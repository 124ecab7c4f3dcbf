"""What this build of fastcnn is and what it can see."""

from __future__ import annotations

import re

import torch

from ._extension import _C


def info() -> dict:
    """A description of the build and the machine.

    Returns:
        dict with ``version``, ``isa`` (the CPU micro-kernel ISA chosen at import:
        ``"avx512"``, ``"avx2"`` or ``"generic"``; ``FASTCNN_ISA`` in the environment caps it),
        ``cuda_compiled`` (whether CUDA sources were compiled into this build),
        ``cuda_archs`` (their architectures), ``cuda_runtime`` / ``cuda_driver`` versions,
        ``cuda_devices`` (name, capability, memory of each visible device), ``threads``
        (the CPU threads the kernels use: ``torch.get_num_threads()``) and ``torch``.
    """
    devices = [_C.cuda_device(i) for i in range(_C.cuda_device_count())]
    return {
        "version": _C.__version__,
        "isa": _C.isa(),
        "cuda_compiled": bool(_C.cuda_compiled),
        "cuda_archs": [a for a in _C.cuda_archs.split(",") if a],
        "cuda_runtime": _version(_C.cuda_runtime_version()),
        "cuda_driver": _version(_C.cuda_driver_version()),
        "cuda_devices": devices,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def cuda_targets(archs: list[str]) -> str:
    """CMake's architecture list as what the GPU gets: ``["80-real", "90"]`` ->
    ``"sm_80, sm_90 + PTX compute_90"`` (a plain number means machine code and PTX)."""
    sass, ptx = [], []
    for arch in archs:
        match = re.fullmatch(r"(\d+[af]?)(?:-(real|virtual))?", arch)
        if match is None:  # "native", "all", "all-major"
            sass.append(arch)
            continue
        number, kind = match.groups()
        if kind != "virtual":
            sass.append(f"sm_{number}")
        if kind != "real":
            ptx.append(f"compute_{number}")
    return ", ".join(sass) + (f" + PTX {', '.join(ptx)}" if ptx else "")


def _version(v: int) -> str | None:
    """CUDA's integer version (12040) as "12.4"; None when absent."""
    return f"{v // 1000}.{v % 1000 // 10}" if v else None
