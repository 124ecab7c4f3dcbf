"""Which forward algorithm fastcnn's CPU convolution uses for 3x3, stride-1 float32 layers.

``"auto"`` (the default) runs Winograd F(4x4, 3x3) on the shapes where it measured faster
than direct convolution (groups 1, dilation 1, at least 8 input and 8 output channels);
``"direct"`` always runs direct convolution (implicit GEMM), the path every other shape
takes. The choice is process-wide, like ``torch.backends`` flags; it is read from the
environment variable ``FASTCNN_CONV_ALGO`` once, when fastcnn is imported. The input
gradient of a stride-1 convolution runs as a forward convolution (of the output gradient,
with flipped filters), so the choice applies to it too; the weight gradient is always direct.

Accuracy of ``"auto"``: Winograd rounds differently from direct summation. Against a float64
convolution of the same float32 inputs, ``max |y - y64| / max |y64|`` over one output
tensor stays below 1e-4 (measured 1e-6 to 2e-5 on random inputs and post-ReLU activations);
choose ``"direct"`` where that is not close enough.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from .._extension import _C

__all__ = ["get_conv_algorithm", "set_conv_algorithm", "use_conv_algorithm"]

ALGORITHMS = ("auto", "direct")
ENV_VAR = "FASTCNN_CONV_ALGO"


def _check(algorithm: object, source: str) -> str:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"{source} must be 'auto' or 'direct', got {algorithm!r}")
    return algorithm  # type: ignore[return-value]


def set_conv_algorithm(algorithm: str) -> None:
    """Use ``algorithm`` (``"auto"`` or ``"direct"``) for every later CPU convolution forward."""
    _C.set_conv_algorithm(_check(algorithm, "set_conv_algorithm: algorithm"))


def get_conv_algorithm() -> str:
    """The forward algorithm in force: ``"auto"`` or ``"direct"``."""
    return _C.conv_algorithm()


@contextmanager
def use_conv_algorithm(algorithm: str) -> Iterator[None]:
    """Run the body with ``algorithm`` in force, then restore the previous one.

    Example::

        with fastcnn.ops.use_conv_algorithm("direct"):
            y_direct = fastcnn.ops.conv2d(x, w, padding=1)
    """
    previous = get_conv_algorithm()
    set_conv_algorithm(algorithm)
    try:
        yield
    finally:
        set_conv_algorithm(previous)


def _from_environment() -> None:
    value = os.environ.get(ENV_VAR, "")
    if value:
        _C.set_conv_algorithm(_check(value, f"the environment variable {ENV_VAR}"))


_from_environment()
