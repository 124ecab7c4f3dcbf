"""Each fastcnn op, defined once: a ``torch.library`` custom op, and a direct route to the
same implementation for plain eager calls.

A call through ``torch.ops.fastcnn.*`` passes the C++ dispatcher and the custom op's Python
wrappers before it reaches the kernel: measured here, about 6 us per call without autograd and
about 50 us with it, more than a small layer's whole kernel.
When nothing could tell the two routes apart (no torch.compile tracing, no dispatch or
torch-function modes, no functorch transform, no profiler, plain tensors), the call goes
straight to the implementation, and through an ``autograd.Function`` built from the op's own
``setup_context`` and ``backward`` when a gradient is needed. Both routes run the same
functions, so they give the same results and the same autograd graph semantics.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# Tensors a direct call may take: subclasses go through torch.ops, which honours their hooks.
PLAIN_TENSORS = (Tensor, torch.nn.Parameter)


def _route(tensors) -> bool | None:
    """None when the call must go through ``torch.ops``; else whether the direct call needs
    autograd. ``tensors``: the op's tensor arguments (a None for an absent optional one).
    One pass over them: this runs on every call."""
    if (
        torch.compiler.is_compiling()
        or torch._C._is_torch_function_mode_enabled()
        or torch._C._len_torch_dispatch_stack()
        or torch._C._are_functorch_transforms_active()
        or torch._C._autograd._profiler_enabled()
    ):
        return None
    grad = False
    for a in tensors:
        if a is not None:
            if type(a) not in PLAIN_TENSORS or not (a.is_cpu or a.is_cuda):
                return None
            grad = grad or a.requires_grad
    return grad and torch.is_grad_enabled()


def _leading_tensors(schema) -> int:
    """How many arguments the schema's tensors take, all of them first: ``_route`` reads
    only those (a third of a conv2d call's route check went on its six geometry values)."""
    is_tensor = ["Tensor" in str(a.type) for a in schema.arguments]
    count = is_tensor.index(False) if False in is_tensor else len(is_tensor)
    if any(is_tensor[count:]):
        raise TypeError(f"{schema.name}: tensor arguments must come before all others")
    return count


class Op:
    """``fastcnn::<name>`` with CPU implementation ``impl``, optional CUDA implementation
    ``cuda`` (same arguments) and fake (meta) kernel ``fake``."""

    def __init__(
        self,
        name: str,
        impl: Callable,
        fake: Callable,
        schema: str | None = None,
        cuda: Callable | None = None,
    ):
        self.name = name
        self._custom_op = torch.library.custom_op(
            f"fastcnn::{name}", mutates_args=(), device_types="cpu", schema=schema
        )(impl)
        self._custom_op.register_fake(fake)
        self._tensors = _leading_tensors(self._custom_op._opoverload._schema)
        self._cpu = self._cuda = impl
        if cuda is not None:
            self._custom_op.register_kernel("cuda", cuda)
            self._cuda = cuda
        self._function: type[torch.autograd.Function] | None = None

    def register_autograd(self, backward: Callable, setup_context: Callable) -> None:
        self._custom_op.register_autograd(backward, setup_context=setup_context)
        run = self._run

        # forward(ctx, ...) rather than a separate setup_context: with the latter,
        # Function.apply binds arguments through inspect.signature on every call (~30 us).
        def forward(ctx, *args):
            output = run(args)
            setup_context(ctx, args, output)
            return output

        self._function = type(
            f"fastcnn_{self.name}",  # the graph shows fastcnn_<name>Backward
            (torch.autograd.Function,),
            {"forward": staticmethod(forward), "backward": staticmethod(backward)},
        )

    def forbid_double_backward(self, forward_name: str) -> None:
        """For backward ops: differentiating them again raises a clear error."""

        def backward(ctx, *grads):
            raise RuntimeError(
                f"fastcnn.ops.{forward_name}: double backward (a gradient of its gradient) is "
                "not supported; compute higher-order derivatives with torch.nn.functional "
                "instead"
            )

        self.register_autograd(backward, setup_context=lambda ctx, inputs, output: None)

    def __call__(self, *args):
        needs_grad = _route(args[: self._tensors])
        if needs_grad is None:
            return self._custom_op(*args)
        if needs_grad and self._function is not None:
            return self._function.apply(*args)
        return self._run(args)

    def _run(self, args: tuple):
        """The implementation for the device of ``args``: ``cuda`` for CUDA tensors (every
        op's first argument is a tensor on the op's device), ``impl`` otherwise."""
        return (self._cuda if args[0].is_cuda else self._cpu)(*args)
