"""Type stubs of fastcnn's compiled module. Tensors are passed as DLPack capsules
(``torch.utils.dlpack.to_dlpack``); outputs and workspace are allocated by the caller."""

from collections.abc import Sequence
from typing import Any

Capsule = Any
Pair = Sequence[int]

__version__: str
cuda_compiled: bool
cuda_archs: str

def isa() -> str: ...
def set_conv_algorithm(algorithm: str) -> None: ...
def conv_algorithm() -> str: ...
def cuda_device_count() -> int: ...
def cuda_device(index: int) -> dict[str, Any]: ...
def cuda_runtime_version() -> int: ...
def cuda_driver_version() -> int: ...
def conv_out_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int) -> int: ...
def pool_out_size(
    size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool
) -> int: ...
def conv2d_workspace(
    pass_: str,
    input: Capsule,
    weight: Capsule,
    output: Capsule,
    stride: Pair,
    pad_begin: Pair,
    pad_end: Pair,
    dilation: Pair,
    groups: int,
    threads: int,
) -> int: ...
def conv2d_forward(
    input: Capsule,
    weight: Capsule,
    bias: Capsule | None,
    output: Capsule,
    stride: Pair,
    pad_begin: Pair,
    pad_end: Pair,
    dilation: Pair,
    groups: int,
    relu: bool,
    workspace: Capsule,
    threads: int,
) -> None: ...
def conv2d_backward_input(
    grad_output: Capsule,
    weight: Capsule,
    grad_input: Capsule,
    stride: Pair,
    pad_begin: Pair,
    pad_end: Pair,
    dilation: Pair,
    groups: int,
    workspace: Capsule,
    threads: int,
) -> None: ...
def conv2d_backward_weight(
    grad_output: Capsule,
    input: Capsule,
    grad_weight: Capsule,
    stride: Pair,
    pad_begin: Pair,
    pad_end: Pair,
    dilation: Pair,
    groups: int,
    workspace: Capsule,
    threads: int,
) -> None: ...
def conv2d_backward_bias(grad_output: Capsule, grad_bias: Capsule, threads: int) -> None: ...
def max_pool2d_forward(
    input: Capsule,
    output: Capsule,
    indices: Capsule | None,
    kernel_size: Pair,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    ceil_mode: bool,
    threads: int,
) -> None: ...
def max_pool2d_backward(
    grad_output: Capsule,
    input: Capsule,
    indices: Capsule | None,
    grad_input: Capsule,
    kernel_size: Pair,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    ceil_mode: bool,
    threads: int,
) -> None: ...
def global_avg_pool2d_forward(input: Capsule, output: Capsule, threads: int) -> None: ...
def global_avg_pool2d_backward(grad_output: Capsule, grad_input: Capsule, threads: int) -> None: ...
def relu_forward(input: Capsule, output: Capsule, threads: int) -> None: ...
def relu_backward(
    grad_output: Capsule, output: Capsule, grad_input: Capsule, guided: bool, threads: int
) -> None: ...
