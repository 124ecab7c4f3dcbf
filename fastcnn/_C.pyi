"""Type stubs of fastcnn's compiled module. Tensors are passed as DLPack capsules
(``torch.utils.dlpack.to_dlpack``); outputs and workspace are allocated by the caller."""

from collections.abc import Callable, Sequence
from typing import Any

Capsule = Any
Pair = Sequence[int]
# A CPU conv workspace: a capsule, or a provider called with the bytes the pass needs.
Workspace = Capsule | Callable[[int], Capsule]

__version__: str
cuda_compiled: bool
cuda_archs: str
# The most outputs a row of 3x3 stride-2 max pooling may have for the forward to keep window
# offsets (max_pool2d_forward's uint8 indices).
max_pool2d_offsets_max_row: int

def isa() -> str: ...
def advise_huge_pages(address: int, nbytes: int) -> bool: ...
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
    workspace: Workspace,
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
    workspace: Workspace,
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
    workspace: Workspace,
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
def nchw_to_nhwc(input: Capsule, output: Capsule, threads: int) -> None: ...
def relu_forward(input: Capsule, output: Capsule, threads: int) -> None: ...
def relu_backward(
    grad_output: Capsule, output: Capsule, grad_input: Capsule, guided: bool, threads: int
) -> None: ...

# CUDA entry points: present only when cuda_compiled. Same arguments as the CPU ones, with
# `stream` (torch.cuda.current_stream(device).cuda_stream) instead of a thread count.
def conv2d_workspace_cuda(
    pass_: str,
    input: Capsule,
    weight: Capsule,
    output: Capsule,
    stride: Pair,
    pad_begin: Pair,
    pad_end: Pair,
    dilation: Pair,
    groups: int,
) -> int: ...
def conv2d_forward_cuda(
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
    allow_tf32: bool,
    stream: int,
) -> None: ...
def conv2d_backward_input_cuda(
    grad_output: Capsule,
    weight: Capsule,
    grad_input: Capsule,
    stride: Pair,
    pad_begin: Pair,
    pad_end: Pair,
    dilation: Pair,
    groups: int,
    allow_tf32: bool,
    stream: int,
) -> None: ...
def conv2d_backward_weight_cuda(
    grad_output: Capsule,
    input: Capsule,
    grad_weight: Capsule,
    stride: Pair,
    pad_begin: Pair,
    pad_end: Pair,
    dilation: Pair,
    groups: int,
    workspace: Capsule | None,
    allow_tf32: bool,
    stream: int,
) -> None: ...
def conv2d_backward_bias_cuda(grad_output: Capsule, grad_bias: Capsule, stream: int) -> None: ...
def max_pool2d_forward_cuda(
    input: Capsule,
    output: Capsule,
    saved: Capsule | None,
    kernel_size: Pair,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    ceil_mode: bool,
    stream: int,
) -> None: ...
def max_pool2d_backward_cuda(
    grad_output: Capsule,
    input: Capsule,
    saved: Capsule | None,
    grad_input: Capsule,
    kernel_size: Pair,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    ceil_mode: bool,
    deterministic: bool,
    stream: int,
) -> None: ...
def global_avg_pool2d_forward_cuda(input: Capsule, output: Capsule, stream: int) -> None: ...
def global_avg_pool2d_backward_cuda(
    grad_output: Capsule, grad_input: Capsule, stream: int
) -> None: ...
def relu_forward_cuda(input: Capsule, output: Capsule, stream: int) -> None: ...
def relu_backward_cuda(
    grad_output: Capsule, output: Capsule, grad_input: Capsule, guided: bool, stream: int
) -> None: ...
