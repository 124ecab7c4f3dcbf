"""Which forward algorithm fastcnn's CPU convolution uses for float32 layers where Winograd
applies: 3x3 stride-1 layers and stride-2 stems.

``"auto"`` (the default) runs Winograd where it measured faster than direct convolution:
F(4x4, 3x3) on 3x3 stride-1 layers (groups 1, dilation 1, at least 8 input and 8 output
channels) and a 1-D F(5, 4) along the output rows of stride-2 stems (at most 4 input
channels, 5 to 8 kernel columns, at least 64 taps per window); ``"direct"`` always runs
direct convolution, the path every other shape takes. The choice is process-wide, like
``torch.backends`` flags; it is read from the environment variable ``FASTCNN_CONV_ALGO`` once,
when fastcnn is imported. The input gradient of a stride-1 convolution runs as a forward
convolution (of the output gradient, with flipped filters), so the choice applies to it too;
so it does to the weight gradient of the same 3x3 layers, which runs as Winograd F(4x4, 3x3)
(the forward's adjoint) where dY and X are channels_last or copied so (NCHW with at least 32
input and output channels) and there are at least 128 output tiles of 4x4.

Accuracy of ``"auto"``: Winograd rounds differently from direct summation. Against a float64
convolution of the same float32 inputs, ``max |y - y64| / max |y64|`` over one output
tensor stays below 1e-4 for F(4x4, 3x3), outputs and weight gradients alike (measured 1e-6
to 2e-5 on random inputs and post-ReLU activations), and below 1e-5 for the stems (measured
1e-6 to 2e-6); in the forward an infinity in the input may come out as NaN and turn the rest
of its tile NaN (the weight gradient runs direct summation when its inputs hold Inf or NaN).
Choose ``"direct"`` where that is not close enough.
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
