"""Occlusion (Zeiler & Fergus): how much the target score drops when a window of the image is
replaced by a baseline, averaged over the windows covering each pixel. The same map as
Captum's ``Occlusion``, computed in batches and incrementally.

How it is fast, and stays exact:

- The model is traced with :mod:`torch.fx` into a graph of layers. A window changes only the
  part of each early activation that its receptive field reaches, so for every layer the
  per-window *box* that can differ from the clean activation is planned ahead. Convolutions,
  pooling and elementwise layers (BatchNorm in eval mode, ReLU, residual additions, ...)
  compute only their box: the clean activation is computed once, and each layer's input box
  is cut from it (with the halo the kernel needs) with the changed values of the previous box
  pasted in. Once a box covers a whole activation (or at any layer whose spatial behaviour is
  unknown) the rest of the network runs in full.
- Eval-mode BatchNorm is folded into the convolution before it, and a following ReLU into the
  convolution's epilogue. Each convolution runs on whichever of fastcnn's kernel and
  PyTorch's (oneDNN) is faster for its shape on this machine: both are exact, and the choice
  is timed once per shape and remembered.
- Many windows go through the network in one batch, as many as ``memory_budget_bytes``
  allows. The boxes cut for a batch and fastcnn's convolution outputs reuse the memory of
  earlier ones once nothing refers to it (new blocks of tens of MB cost a page fault per 4 KB).

A model that cannot be traced is evaluated whole on batches of occluded images.
"""

from __future__ import annotations

import logging
import math
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, fx

from .. import nn as fnn
from .. import ops
from ..data.normalize import Normalize
from ..ops._shapes import conv2d_output_shape
from ..ops.conv2d import _padding, conv2d_into
from ._attribution import check_inputs, check_model, check_target, class_scores
from ._layers import evaluating

__all__ = ["occlusion"]

log = logging.getLogger(__name__)

_BYTES_PER_ROW_FACTOR = 3  # headroom over the planned activations for temporaries

# ---------------------------------------------------------------------------------------------
# Windows: Captum's definition
# ---------------------------------------------------------------------------------------------


def _pair(fn: str, name: str, value) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        raise ValueError(f"{fn}: {name} must be an int >= 1 or a pair of them, got {value!r}")
    return int(value[0]), int(value[1])


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Window starts along one dimension: 0, stride, 2 * stride, ... until the image is
    covered; the last window may hang over the edge (it is cut there), as in Captum."""
    return [i * stride for i in range(math.ceil((size - window) / stride) + 1)]


def _check_geometry(fn: str, size: tuple[int, int], window, stride) -> None:
    for dim, s, w, st in zip(("height", "width"), size, window, stride):
        if w > s:
            raise ValueError(f"{fn}: window {window} is larger than the image ({dim} {s})")
        if st > w and w < s:
            raise ValueError(
                f"{fn}: stride {stride} must not exceed the window {window}, or some pixels "
                "would be covered by no window"
            )


def _coverage(size: int, window: int, stride: int) -> Tensor:
    """Tensor[windows, size]: 1 where window i covers the pixel."""
    starts = torch.tensor(_starts(size, window, stride))
    pixels = torch.arange(size)
    return ((pixels >= starts[:, None]) & (pixels < starts[:, None] + window)).double()


def _assemble(diffs: Tensor, size: tuple[int, int], window, stride) -> Tensor:
    """Per-pixel mean of the score drops Tensor[N, windows_y, windows_x] of the windows that
    cover the pixel: Tensor[N, H, W]."""
    cy, cx = (_coverage(s, w, st) for s, w, st in zip(size, window, stride))
    total = cy.t() @ diffs.detach().cpu().double() @ cx
    count = cy.sum(0)[:, None] * cx.sum(0)[None, :]
    return total / count


# ---------------------------------------------------------------------------------------------
# The model as a graph of operations with known spatial behaviour
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    """Geometry of a sliding-window layer along H and W; ``fill`` pads its input."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]  # at the top / left; the bottom / right follows from the sizes
    dilation: tuple[int, int]
    fill: float


@dataclass
class _Op:
    """How a graph node is evaluated. ``run(*args, **kwargs)`` evaluates it on whole
    activations; ``kind`` says how it acts on space:

    - ``"window"``: a convolution or pooling of its first argument, geometry ``window``;
      ``crop(x)`` evaluates it without padding on an input cut (and padded) beforehand;
    - ``"pointwise"``: each output pixel depends on the same pixel of its arguments;
    - ``"global"``: anything else (or unknown).
    """

    run: Callable
    kind: str = "global"
    window: _Window | None = None
    crop: Callable[[Tensor], Tensor] | None = None
    inplace: bool = False
    params: _ConvParams | None = None  # a convolution's, for folding BatchNorm and ReLU


_POINTWISE_MODULES = (
    torch.nn.ReLU,
    torch.nn.ReLU6,
    torch.nn.LeakyReLU,
    torch.nn.ELU,
    torch.nn.SiLU,
    torch.nn.GELU,
    torch.nn.Sigmoid,
    torch.nn.Tanh,
    torch.nn.Hardtanh,
    torch.nn.Hardswish,
    torch.nn.Hardsigmoid,
    torch.nn.Mish,
    torch.nn.Identity,
    torch.nn.Dropout,
    torch.nn.Dropout2d,
    fnn.ReLU,
    fnn.GuidedReLU,
    Normalize,
)
_POINTWISE_FUNCTIONS = {
    ops.relu,
    torch.relu,
    torch.relu_,
    F.relu,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.silu,
    F.gelu,
    F.hardtanh,
    F.hardswish,
    torch.sigmoid,
    torch.tanh,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
    torch.clamp,
    torch.clamp_min,
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.neg,
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
}
_INPLACE_FUNCTIONS = {torch.relu_, operator.iadd, operator.isub, operator.imul, operator.itruediv}
_POINTWISE_METHODS = {
    "relu",
    "sigmoid",
    "tanh",
    "add",
    "sub",
    "mul",
    "div",
    "neg",
    "clamp",
    "clamp_min",
    "contiguous",
}
_RELUS_MODULES = (torch.nn.ReLU, fnn.ReLU)
_RELU_FUNCTIONS = {torch.relu, torch.relu_, F.relu, ops.relu}


class _Tracer(fx.Tracer):
    """Traces into containers; every module without children is a leaf (a layer)."""

    def __init__(self) -> None:
        super().__init__(
            autowrap_functions=(ops.conv2d, ops.max_pool2d, ops.relu, ops.global_avg_pool2d)
        )

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        return next(iter(m.children()), None) is None


def _conv_padding(m: torch.nn.Conv2d) -> tuple[tuple[int, int], object]:
    """(padding at the top / left, the padding argument for a whole-image convolution)."""
    if m.padding == "valid":
        return (0, 0), 0
    if m.padding == "same":
        total = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size)]
        return (total[0] // 2, total[1] // 2), "same"
    return tuple(m.padding), tuple(m.padding)


# How many tensors share a storage (inductor's own liveness check); the count includes the
# temporary storage object that asking makes.
_storage_use_count = getattr(torch._C, "_storage_Use_Count", None)


class _Memory:
    """Memory for the boxes that batches cut and for fastcnn's convolution outputs, handed out
    again once no tensor refers to it. A batch's activations run to tens of MB each, which the
    C allocator maps afresh on every allocation (and unmaps on release), so new memory costs a
    page fault per 4 KB: a tenth of the run on ResNet-18. Without torch's use count every
    request gets new memory."""

    def __init__(self) -> None:
        self.blocks: list[Tensor] = []

    def empty(self, numel: int, like: Tensor) -> Tensor:
        """A Tensor[numel] of ``like``'s dtype and device, contents undefined."""
        if _storage_use_count is None:
            return like.new_empty(numel)
        free = [
            b
            for b in self.blocks
            if b.numel() >= numel
            and (b.dtype, b.device) == (like.dtype, like.device)
            and _storage_use_count(b.untyped_storage()._cdata) <= 2
        ]
        if free:
            return min(free, key=Tensor.numel)[:numel]
        self.blocks.append(like.new_empty(numel))
        return self.blocks[-1][:numel]  # a view: the block stays the pool's only reference


@dataclass
class _ConvParams:
    """A convolution (optionally with its ReLU fused), runnable on either backend."""

    weight: Tensor
    bias: Tensor | None
    stride: tuple[int, int]
    padding: object
    dilation: tuple[int, int]
    groups: int
    relu: bool = False
    memory: _Memory = field(default_factory=_Memory)  # where fastcnn's kernel writes its output

    def __call__(self, x: Tensor, padding) -> Tensor:
        return _CONV_BACKENDS[_conv_backend(self, x, padding)](self, x, padding)

    def key(self, x: Tensor, padding) -> tuple:
        """What the backend choice depends on: the image size (boxes a few pixels wide and
        the whole image favour different kernels) and whether the batch is large enough to
        fill a tuning sample, not its exact size."""
        shape = (tuple(self.weight.shape), tuple(x.shape[1:]), x.dtype, x.device.type)
        batched = len(x) >= _TUNING_BATCH
        return (*shape, batched, self.stride, padding, self.dilation, self.groups)


def _channels_last(p: _ConvParams, x: Tensor) -> tuple[Tensor, Tensor]:
    """Both backends take channels_last, so activations never change format between layers."""
    cl = torch.channels_last
    return x.contiguous(memory_format=cl), p.weight.contiguous(memory_format=cl)


def _fastcnn_conv(p: _ConvParams, x: Tensor, padding) -> Tensor:
    x, weight = _channels_last(p, x)
    begin, end = _padding("occlusion", padding, tuple(weight.shape[2:]), p.stride, p.dilation)
    n, k, h, w = conv2d_output_shape(x.shape, weight.shape, p.stride, begin, end, p.dilation)
    out = p.memory.empty(n * k * h * w, x).view(n, h, w, k).permute(0, 3, 1, 2)
    return conv2d_into(out, x, weight, p.bias, p.stride, begin, end, p.dilation, p.groups, p.relu)


def _torch_conv(p: _ConvParams, x: Tensor, padding) -> Tensor:
    x, weight = _channels_last(p, x)
    y = F.conv2d(x, weight, p.bias, p.stride, padding, p.dilation, p.groups)
    return y.relu_() if p.relu else y


# fastcnn's kernels or PyTorch's (oneDNN): both exact, each faster on some shapes; which one a
# call gets is timed on its first occurrence and remembered.
_CONV_BACKENDS: dict[str, Callable[[_ConvParams, Tensor, object], Tensor]] = {
    "fastcnn": _fastcnn_conv,
    "torch": _torch_conv,
}
_CONV_CHOICES: dict[tuple, str] = {}
_TUNING_RUNS = 2
_TUNING_BATCH = 16  # images per timing: enough to show batch behaviour, cheap next to the run


def _conv_backend(p: _ConvParams, x: Tensor, padding) -> str:
    """The faster backend for this convolution call (timed on the first _TUNING_BATCH
    images of its first occurrence)."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return "torch"
    key = p.key(x, padding)
    if key not in _CONV_CHOICES:
        sample = x[:_TUNING_BATCH]
        times: dict[str, float] = {name: math.inf for name in _CONV_BACKENDS}
        for run in range(_TUNING_RUNS + 1):
            for name, conv in _CONV_BACKENDS.items():
                start = time.perf_counter()
                conv(p, sample, padding)
                if run:  # the first run of each warms up (allocations, primitive creation)
                    times[name] = min(times[name], time.perf_counter() - start)
        _CONV_CHOICES[key] = min(times, key=times.__getitem__)
        log.debug("occlusion: conv %s runs on %s (%s)", key, _CONV_CHOICES[key], times)
    return _CONV_CHOICES[key]


def _conv_op(p: _ConvParams, pad_begin: tuple[int, int]) -> _Op:
    window = _Window(tuple(p.weight.shape[2:]), p.stride, pad_begin, p.dilation, 0.0)
    return _Op(lambda x: p(x, p.padding), "window", window, lambda x: p(x, 0), params=p)


def _conv_module_op(m: torch.nn.Conv2d) -> _Op | None:
    if type(m) not in (torch.nn.Conv2d, fnn.Conv2d) or m.padding_mode != "zeros":
        return None
    pad_begin, padding = _conv_padding(m)
    bias = None if m.bias is None else m.bias.detach()
    params = _ConvParams(m.weight.detach(), bias, m.stride, padding, m.dilation, m.groups)
    return _conv_op(params, pad_begin)


def _pool_module_op(m: torch.nn.Module) -> _Op | None:
    if type(m) in (torch.nn.MaxPool2d, fnn.MaxPool2d) and not m.return_indices:
        k, s, p, d = (
            torch.nn.modules.utils._pair(v)
            for v in (m.kernel_size, m.stride, m.padding, m.dilation)
        )
        window = _Window(k, s, p, d, -math.inf)
        return _Op(m, "window", window, lambda x: F.max_pool2d(x, k, s, 0, d))
    if type(m) is torch.nn.AvgPool2d and not m.ceil_mode:
        k, s, p = (torch.nn.modules.utils._pair(v) for v in (m.kernel_size, m.stride, m.padding))
        if p != (0, 0) and not m.count_include_pad:
            return None
        window = _Window(k, s, p, (1, 1), 0.0)
        divisor = m.divisor_override
        return _Op(
            m, "window", window, lambda x: F.avg_pool2d(x, k, s, 0, divisor_override=divisor)
        )
    return None


def _module_op(m: torch.nn.Module) -> _Op:
    op = _conv_module_op(m) if isinstance(m, torch.nn.Conv2d) else _pool_module_op(m)
    if op is not None:
        return op
    inplace = bool(getattr(m, "inplace", False))
    if type(m) in _POINTWISE_MODULES:
        return _Op(m, "pointwise", inplace=inplace)
    if type(m) is torch.nn.BatchNorm2d and not m.training and m.running_mean is not None:
        return _Op(m, "pointwise")
    return _Op(m, inplace=inplace)


def _node_op(node: fx.Node, modules: dict[str, torch.nn.Module]) -> _Op:
    if node.op == "call_module":
        return _module_op(modules[node.target])
    if node.op == "call_function":
        target = node.target
        inplace = target in _INPLACE_FUNCTIONS or bool(node.kwargs.get("inplace", False))
        kind = "pointwise" if target in _POINTWISE_FUNCTIONS else "global"
        return _Op(target, kind, inplace=inplace)
    # call_method
    name = node.target
    inplace = name.endswith("_") and not name.startswith("_")
    kind = "pointwise" if name.rstrip("_") in _POINTWISE_METHODS else "global"
    return _Op(lambda obj, *a, **k: getattr(obj, name)(*a, **k), kind, inplace=inplace)


def _functionalize(graph: fx.Graph, ops_: dict[fx.Node, _Op]) -> None:
    """An in-place node ``n = f_(a)`` changes ``a`` for every later user of ``a``: those
    users now read ``n`` instead, and ``n`` runs on a copy of ``a`` (see :func:`_call`)."""
    order = {node: i for i, node in enumerate(graph.nodes)}
    for node, op in ops_.items():
        if not op.inplace or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        mutated = node.args[0]
        for user in list(mutated.users):
            if order[user] > order[node]:
                user.replace_input_with(mutated, node)


def _fold_batchnorm(conv: _ConvParams, bn: torch.nn.BatchNorm2d) -> _ConvParams:
    """The convolution followed by eval-mode BatchNorm, as one convolution."""
    w = conv.weight.double()
    scale = (bn.running_var.double() + bn.eps).rsqrt()
    shift = -bn.running_mean.double() * scale
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
        shift = shift * bn.weight.detach().double() + bn.bias.detach().double()
    bias = shift if conv.bias is None else conv.bias.double() * scale + shift
    return _ConvParams(
        (w * scale[:, None, None, None]).to(conv.weight.dtype),
        bias.to(conv.weight.dtype),
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.relu,
    )


def _sole_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    if len(users) != 1 or len(users[0].args) < 1 or users[0].args[0] is not node:
        return None
    if any(isinstance(a, fx.Node) for a in users[0].args[1:]) or any(
        isinstance(v, fx.Node) for v in users[0].kwargs.values()
    ):
        return None
    return users[0]


def _is_relu(node: fx.Node, modules: dict[str, torch.nn.Module]) -> bool:
    if node.op == "call_module":
        return type(modules[node.target]) in _RELUS_MODULES
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _fuse(graph: fx.Graph, ops_: dict[fx.Node, _Op], modules: dict[str, torch.nn.Module]):
    """Folds eval-mode BatchNorm into the convolution before it, and a ReLU after either into
    the convolution's epilogue; the absorbed nodes leave the graph."""
    for node in list(graph.nodes):
        op = ops_.get(node)
        if op is None or op.params is None:
            continue
        params = op.params
        user = _sole_user(node)
        if (
            user is not None
            and user.op == "call_module"
            and type(modules[user.target]) is torch.nn.BatchNorm2d
            and ops_[user].kind == "pointwise"
        ):
            params = _fold_batchnorm(params, modules[user.target])
            _absorb(graph, ops_, node, user)
            user = _sole_user(node)
        if user is not None and _is_relu(user, modules):
            params.relu = True
            _absorb(graph, ops_, node, user)
        ops_[node] = _conv_op(params, op.window.pad)


def _absorb(graph: fx.Graph, ops_: dict[fx.Node, _Op], node: fx.Node, user: fx.Node) -> None:
    user.replace_all_uses_with(node)
    graph.erase_node(user)
    del ops_[user]


def _trace(model: torch.nn.Module) -> tuple[fx.Graph, dict[fx.Node, _Op]] | None:
    """The model's graph with an :class:`_Op` per call, or None when it cannot be traced."""
    try:
        graph = _Tracer().trace(model)
    except Exception as error:  # any tracing failure: evaluate the model whole instead
        log.info("occlusion: the model cannot be traced (%s); evaluating it whole", error)
        return None
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return None
    modules = dict(model.named_modules())
    ops_ = {
        node: _node_op(node, modules)
        for node in graph.nodes
        if node.op in ("call_module", "call_function", "call_method")
    }
    _functionalize(graph, ops_)
    _fuse(graph, ops_, modules)
    return graph, ops_


# ---------------------------------------------------------------------------------------------
# Planning: which box of each activation a window can change
# ---------------------------------------------------------------------------------------------
#
# Windows lie on a grid (rows of windows x columns of windows), and every layer acts on the
# two spatial axes separately, so all geometry is kept per axis: along H per row of windows,
# along W per column of windows.


@dataclass
class _Box:
    """An ``h x w`` region of an activation of spatial ``size``, whose top row is ``y[i]``
    for windows in grid row i and whose left column is ``x[j]`` for grid column j."""

    y: Tensor  # LongTensor[grid rows]
    x: Tensor  # LongTensor[grid columns]
    h: int
    w: int
    size: tuple[int, int]

    @property
    def whole(self) -> bool:
        return (self.h, self.w) == tuple(self.size)


@dataclass
class _Reach:
    """Rows [y0, y1) (per grid row) and columns [x0, x1) (per grid column) of an activation
    that a window can change."""

    y0: Tensor
    y1: Tensor
    x0: Tensor
    x1: Tensor

    def box(self, size: tuple[int, int]) -> _Box:
        """The smallest box of one size for all windows, kept inside the activation."""
        h = min(max(int((self.y1 - self.y0).max()), 1), size[0])
        w = min(max(int((self.x1 - self.x0).max()), 1), size[1])
        return _Box(self.y0.clamp(max=size[0] - h), self.x0.clamp(max=size[1] - w), h, w, size)

    def hull(self, other: _Reach) -> _Reach:
        return _Reach(
            torch.minimum(self.y0, other.y0),
            torch.maximum(self.y1, other.y1),
            torch.minimum(self.x0, other.x0),
            torch.maximum(self.x1, other.x1),
        )


def _window_reach(r: _Reach, win: _Window, size: tuple[int, int]) -> _Reach:
    """The outputs of a sliding-window layer whose windows overlap ``r``."""
    out = []
    for dim, (a0, a1) in enumerate(((r.y0, r.y1), (r.x0, r.x1))):
        k, s, p, d = win.kernel[dim], win.stride[dim], win.pad[dim], win.dilation[dim]
        o0 = (-torch.div(-(a0 + p - (k - 1) * d), s, rounding_mode="floor")).clamp(0, size[dim])
        o1 = (torch.div(a1 - 1 + p, s, rounding_mode="floor") + 1).clamp(0, size[dim])
        out += [o0, torch.maximum(o1, o0)]
    return _Reach(*out)


def _spatial(value) -> tuple[int, int] | None:
    return tuple(value.shape[2:]) if isinstance(value, Tensor) and value.dim() == 4 else None


@dataclass
class _Plan:
    """The graph, its ops, every node's clean value, the nodes that depend on the image
    (``varying``), and the box of those evaluated on a box (the others run whole)."""

    graph: fx.Graph
    ops: dict[fx.Node, _Op]
    clean: dict[fx.Node, object]
    varying: set[fx.Node]
    boxes: dict[fx.Node, _Box]
    last_use: dict[fx.Node, int]
    order: dict[fx.Node, int]
    memory: _Memory  # for the boxes batches cut and the outputs of fastcnn's convolutions
    sources: dict[tuple, _Source] = field(default_factory=dict)  # filled as batches need them


def _box_constant_ok(value, varying: bool, size: tuple[int, int]) -> bool:
    """A constant argument of a box-evaluated elementwise node must broadcast over space or
    be one image of the activation's size."""
    if varying:
        return True
    spatial = _spatial(value)
    return spatial in (None, (1, 1)) or (spatial == size and value.shape[0] == 1)


def _local_reach(node: fx.Node, op: _Op, clean: dict, varying: set, reach: dict):
    """Where a node can differ from its clean value, or None when it has to run whole."""
    size = _spatial(clean[node])
    inputs = [a for a in node.all_input_nodes if a in varying]
    if size is None or op.kind == "global" or any(a not in reach for a in inputs):
        return None
    if op.kind == "window":
        if inputs != [node.args[0]]:
            return None
        return _window_reach(reach[inputs[0]], op.window, size)
    if any(_spatial(clean[a]) != size for a in inputs) or not all(
        _box_constant_ok(clean[a], a in varying, size) for a in node.all_input_nodes
    ):
        return None
    result = reach[inputs[0]]
    for a in inputs[1:]:
        result = result.hull(reach[a])
    return result


def _plan(
    graph: fx.Graph, ops_: dict[fx.Node, _Op], clean: dict, windows: _Reach, memory: _Memory
) -> _Plan:
    """Which nodes depend on the image, and the box each box-evaluable one computes."""
    varying: set[fx.Node] = set()
    reach: dict[fx.Node, _Reach] = {}
    boxes: dict[fx.Node, _Box] = {}
    cache: dict[tuple, _Box] = {}  # nodes with the same reach share one box object
    for node in graph.nodes:
        if node.op == "placeholder":
            varying.add(node)
            reach[node] = windows
        elif node.op != "get_attr" and any(a in varying for a in node.all_input_nodes):
            varying.add(node)
            if node.op != "output":
                r = _local_reach(node, ops_[node], clean, varying, reach)
                if r is not None:
                    reach[node] = r
        if node not in reach:
            continue
        size = _spatial(clean[node])
        box = cache.setdefault((id(reach[node]), size), reach[node].box(size))
        if box.whole and node.op != "placeholder":
            del reach[node]
        else:
            boxes[node] = box
    order = {node: i for i, node in enumerate(graph.nodes)}
    last_use = {node: max((order[u] for u in node.users), default=-1) for node in graph.nodes}
    return _Plan(graph, ops_, clean, varying, boxes, last_use, order, memory)


def _row_bytes(plan: _Plan) -> int:
    """Peak bytes of the live activations per occluded image, planned node by node, with
    headroom for temporaries."""
    live: dict[fx.Node, int] = {}
    peak = 0
    for node in plan.graph.nodes:
        value = plan.clean.get(node)
        if node not in plan.varying or not isinstance(value, Tensor) or value.dim() == 0:
            continue
        per_row = value.numel() * value.element_size() // max(value.shape[0], 1)
        box = plan.boxes.get(node)
        if box is not None:
            per_row = per_row * box.h * box.w // math.prod(box.size)
        live[node] = per_row
        peak = max(peak, sum(live.values()))
        for done in [m for m in live if plan.last_use[m] <= plan.order[node]]:
            del live[done]
    return max(peak, 1) * _BYTES_PER_ROW_FACTOR


# ---------------------------------------------------------------------------------------------
# Cutting boxes out of activations
# ---------------------------------------------------------------------------------------------


@dataclass
class _Local:
    """A box-evaluated activation of a batch: ``values`` Tensor[B, C, h, w] whose top row is
    ``y[i]`` for grid row i of the batch and left column ``x[j]`` for grid column j."""

    values: Tensor
    y: Tensor
    x: Tensor


def _runs(offsets: Tensor) -> list[tuple[int, int, int]]:
    """Maximal runs ``(start, stop, value)`` of equal consecutive values."""
    values = offsets.tolist()
    runs, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            runs.append((start, i, values[start]))
            start = i
    return runs


def _paste(out: Tensor, patch: _Local, y: Tensor, x: Tensor) -> None:
    """Copies ``patch`` into the boxes ``out`` Tensor[B, C, h, w] (corners ``y``, ``x``)
    where they overlap. Grid rows (and columns) whose patch sits at the same offset in its
    box form runs, each pair of runs pasted as one slice copy. Clamping at the image's edges
    and strided layers' rounding make a few runs each way: on ResNet-18 at most about a
    hundred copies of whole channel runs, where one gather of every element was ten times
    slower in all."""
    nk, nl = len(y), len(x)
    dst = out.view(-1, nk, nl, *out.shape[1:])  # splitting B is a view in any layout
    src = patch.values.view(-1, nk, nl, *patch.values.shape[1:])
    h, w = out.shape[2:]
    ph, pw = patch.values.shape[2:]
    for k0, k1, dy in _runs(patch.y - y):
        a0, a1 = max(dy, 0), min(dy + ph, h)
        for l0, l1, dx in _runs(patch.x - x):
            b0, b1 = max(dx, 0), min(dx + pw, w)
            if a0 < a1 and b0 < b1:
                target = dst[:, k0:k1, l0:l1, :, a0:a1, b0:b1]
                target.copy_(src[:, k0:k1, l0:l1, :, a0 - dy : a1 - dy, b0 - dx : b1 - dx])


class _Source:
    """An activation Tensor[N, C, H, W] to cut boxes from, kept channels-last (so that each
    box row is one contiguous run) and padded with ``fill`` wherever boxes at corners
    ``ys`` x ``xs`` of size ``h x w`` overhang it."""

    def __init__(self, t: Tensor, ys: Tensor, xs: Tensor, h: int, w: int, fill=None) -> None:
        nhwc = t.permute(0, 2, 3, 1)
        n, height, width, c = nhwc.shape
        top, left = max(0, -int(ys.min())), max(0, -int(xs.min()))
        bottom = max(0, int(ys.max()) + h - height)
        right = max(0, int(xs.max()) + w - width)
        if top or left or bottom or right:
            padded = nhwc.new_full((n, height + top + bottom, width + left + right, c), fill)
            padded[:, top : top + height, left : left + width] = nhwc
            nhwc = padded
        self.nhwc, self.top, self.left = nhwc.contiguous(), top, left

    def cut(self, n: int, y: Tensor, x: Tensor, h: int, w: int, patch=None, memory=None) -> Tensor:
        """The ``h x w`` boxes at top rows ``y`` (LongTensor[nk]) and left columns ``x``
        (LongTensor[nl]) for each of ``n`` images (the source's, or its one image repeated),
        with ``patch`` pasted over them: Tensor[n * nk * nl, C, h, w], channels_last, rows
        ordered (image, grid row, grid column), in ``memory``'s memory (default: new)."""
        src = self.nhwc
        m, height, width, c = src.shape
        y, x = y + self.top, x + self.left
        if (
            int(y.min()) < 0
            or int(y.max()) + h > height
            or int(x.min()) < 0
            or int(x.max()) + w > width
        ):
            raise RuntimeError("occlusion: internal error, a box falls outside its padded source")
        sn, sh, sw, _ = src.stride()
        boxes = src.as_strided((m, height - h + 1, width - w + 1, h, w, c), (sn, sh, sw, sh, sw, 1))
        shape = (m, len(y), len(x), h, w, c)
        numel = math.prod(shape)
        into = src.new_empty(numel) if memory is None else memory.empty(numel, src)
        out = torch.ops.aten.index.Tensor_out(
            boxes, [None, y[:, None], x[None, :]], out=into.view(shape)
        )
        if m != n:
            out = out.expand(n, *out.shape[1:])
        out = out.reshape(-1, h, w, c).permute(0, 3, 1, 2)
        if patch is not None:
            _paste(out, patch, y - self.top, x - self.left)
        return out


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def _call(op: _Op, args: tuple, kwargs: dict):
    if op.inplace and args and isinstance(args[0], Tensor):
        args = (args[0].clone(), *args[1:])  # see _functionalize
    return op.run(*args, **kwargs)


def _fetch(model: torch.nn.Module, target: str):
    value = model
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _clean_pass(graph: fx.Graph, ops_: dict[fx.Node, _Op], model, inputs: Tensor) -> dict:
    """Every node's value on the unoccluded images."""
    values: dict[fx.Node, object] = {}
    for node in graph.nodes:
        if node.op == "placeholder":
            values[node] = inputs
        elif node.op == "get_attr":
            values[node] = _fetch(model, node.target)
        elif node.op == "output":
            values[node] = fx.node.map_arg(node.args[0], values.__getitem__)
        else:
            args = fx.node.map_arg(node.args, values.__getitem__)
            kwargs = fx.node.map_arg(node.kwargs, values.__getitem__)
            values[node] = _call(ops_[node], args, kwargs)
    return values


class _Batch:
    """A rectangle of the window grid (grid rows ``ks``, grid columns ``ls``) over the n
    images: B = n * len(ks) * len(ls) rows, ordered (image, grid row, grid column).
    ``occluder`` holds each row's window of baseline values."""

    def __init__(self, plan: _Plan, ks: Tensor, ls: Tensor, n: int, occluder: _Local) -> None:
        self.plan, self.ks, self.ls, self.n, self.occluder = plan, ks, ls, n, occluder
        self.values: dict[fx.Node, object] = {}

    def source(self, node: fx.Node, box: _Box) -> _Source:
        """The node's clean activation as a :class:`_Source` (boxes lie inside it)."""
        sources = self.plan.sources
        if (node, None) not in sources:
            sources[node, None] = _Source(self.plan.clean[node], box.y, box.x, box.h, box.w)
        return sources[node, None]

    def cut(self, node: fx.Node, box: _Box, patch: _Local | None = None) -> Tensor:
        """The node's clean activation on ``box``, with ``patch`` pasted over it."""
        source = self.source(node, box)
        return source.cut(
            self.n, box.y[self.ks], box.x[self.ls], box.h, box.w, patch, self.plan.memory
        )

    def whole(self, node: fx.Node):
        """The node's value over whole activations, Tensor[B, ...] (constants as they are)."""
        if node not in self.plan.varying:
            return self.plan.clean[node]
        value = self.values[node]
        if not isinstance(value, _Local):
            return value
        box = self.plan.boxes[node]
        zy, zx = box.y.new_zeros(len(self.ks)), box.x.new_zeros(len(self.ls))
        return self.source(node, box).cut(self.n, zy, zx, *box.size, value, self.plan.memory)

    def region(self, node: fx.Node, box: _Box):
        """The node's value on ``box``; constants that broadcast over space as they are."""
        clean = self.plan.clean[node]
        if node not in self.plan.varying:
            return self.cut(node, box) if _spatial(clean) == box.size else clean
        value = self.values[node]
        return value.values if self.plan.boxes[node] is box else self.cut(node, box, value)

    def window_input(self, node: fx.Node, op: _Op, box: _Box) -> Tensor:
        """The input region, padding included, that a window layer's output ``box`` reads."""
        win, src = op.window, node.args[0]
        h, w = (
            (m - 1) * s + (k - 1) * d + 1
            for m, s, k, d in zip((box.h, box.w), win.stride, win.kernel, win.dilation)
        )
        # Input corners: box corner * stride - padding.
        ys, xs = box.y * win.stride[0] - win.pad[0], box.x * win.stride[1] - win.pad[1]
        sources = self.plan.sources
        if (src, node) not in sources:
            sources[src, node] = _Source(self.plan.clean[src], ys, xs, h, w, win.fill)
        return sources[src, node].cut(
            self.n, ys[self.ks], xs[self.ls], h, w, self.values[src], self.plan.memory
        )

    def evaluate(self, node: fx.Node):
        """The node's value for this batch: a :class:`_Local` on its planned box, or its
        whole value (Tensor[B, ...]) when it has none."""
        plan = self.plan
        op, box = plan.ops.get(node), plan.boxes.get(node)
        if box is None:
            args = fx.node.map_arg(node.args, self.whole)
            return _call(op, args, fx.node.map_arg(node.kwargs, self.whole))
        if node.op == "placeholder":
            values = self.cut(node, box, self.occluder)
        elif op.kind == "window":
            values = op.crop(self.window_input(node, op, box))
        else:
            args = fx.node.map_arg(node.args, lambda a: self.region(a, box))
            values = _call(op, args, fx.node.map_arg(node.kwargs, lambda a: self.region(a, box)))
        return _Local(values, box.y[self.ks], box.x[self.ls])

    def run(self):
        """The model's output for every row."""
        plan = self.plan
        for node in plan.graph.nodes:
            if node.op == "output":
                return fx.node.map_arg(node.args[0], self.whole)
            if node not in plan.varying:
                continue
            self.values[node] = self.evaluate(node)
            for arg in node.all_input_nodes:
                if arg in self.values and plan.last_use[arg] <= plan.order[node]:
                    del self.values[arg]
        raise RuntimeError("occlusion: the traced graph has no output")


# ---------------------------------------------------------------------------------------------
# The public function
# ---------------------------------------------------------------------------------------------


def _check_baseline(fn: str, baseline, inputs: Tensor):
    """A number, or a Tensor broadcastable to ``inputs`` (returned expanded to its shape)."""
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return float(baseline)
    if isinstance(baseline, Tensor):
        try:
            return baseline.to(inputs).expand(inputs.shape)
        except RuntimeError:
            pass
    shape = tuple(baseline.shape) if isinstance(baseline, Tensor) else baseline
    raise ValueError(
        f"{fn}: baseline must be a number or a Tensor broadcastable to the inputs "
        f"{tuple(inputs.shape)}, got {shape!r}"
    )


@dataclass
class _Setup:
    """What every batch shares: the images, the windows (grid of top rows ``wy`` x left
    columns ``wx``), the baseline and the targets."""

    inputs: Tensor
    baseline: float | Tensor
    window: tuple[int, int]
    wy: Tensor  # LongTensor[grid rows]
    wx: Tensor  # LongTensor[grid columns]
    target: Tensor
    source: _Source | None = None  # a tensor baseline, padded

    def occluder(self, ks: Tensor, ls: Tensor) -> _Local:
        """The baseline values of the windows of a batch, Tensor[B, C, *window]."""
        n, c = self.inputs.shape[:2]
        y, x = self.wy[ks], self.wx[ls]
        if isinstance(self.baseline, Tensor):
            if self.source is None:  # windows may overhang the image: pad it
                self.source = _Source(self.baseline, self.wy, self.wx, *self.window, 0.0)
            values = self.source.cut(n, y, x, *self.window)
        else:
            b = n * len(ks) * len(ls)
            values = self.inputs.new_tensor(self.baseline).expand(b, c, *self.window)
        return _Local(values, y, x)

    def scores(self, output, windows: int) -> Tensor:
        """Target scores of rows ordered (image, window): Tensor[N * windows]."""
        return class_scores("occlusion", output, self.target.repeat_interleave(windows))

    def batches(self, per_batch: int, progress: bool):
        """Rectangles (grid rows, grid columns) of at most ``per_batch`` windows."""
        ny, nx = len(self.wy), len(self.wx)
        cols = min(nx, per_batch)
        rows = max(1, per_batch // cols)
        blocks = [
            (torch.arange(k, min(k + rows, ny)), torch.arange(j, min(j + cols, nx)))
            for k in range(0, ny, rows)
            for j in range(0, nx, cols)
        ]
        if progress:
            from tqdm.auto import tqdm

            blocks = tqdm(blocks, desc="occlusion", leave=False)
        return blocks


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_budget(fn: str, max_batch, memory_budget_bytes) -> None:
    if max_batch is not None and not _positive_int(max_batch):
        raise ValueError(f"{fn}: max_batch must be None or an int >= 1, got {max_batch!r}")
    if not _positive_int(memory_budget_bytes):
        raise ValueError(
            f"{fn}: memory_budget_bytes must be an int >= 1, got {memory_budget_bytes!r}"
        )


def _batch_size(row_bytes: int, n: int, total: int, max_batch, budget: int) -> int:
    fits = max(1, budget // max(row_bytes * n, 1))
    return int(min(total, fits, max_batch or total))


def _drops(setup: _Setup, clean: Tensor, evaluate, per_batch: int, progress: bool) -> Tensor:
    """Score drops Tensor[N, grid rows, grid columns]; ``evaluate(ks, ls)`` gives the
    model's output for a batch."""
    n = setup.inputs.shape[0]
    drops = clean.new_zeros(n, len(setup.wy), len(setup.wx))
    for ks, ls in setup.batches(per_batch, progress):
        count = len(ks) * len(ls)
        drop = clean.repeat_interleave(count) - setup.scores(evaluate(ks, ls), count)
        drops[:, ks[0] : ks[-1] + 1, ls[0] : ls[-1] + 1] = drop.view(n, len(ks), len(ls))
    return drops


def _whole_model_drops(model, setup: _Setup, max_batch, budget: int, progress: bool) -> Tensor:
    """Score drops with the model evaluated whole on the occluded images."""
    inputs = setup.inputs
    n, total = inputs.shape[0], len(setup.wy) * len(setup.wx)
    clean = setup.scores(model(inputs), 1)
    zero = torch.zeros(1, dtype=torch.long)
    source = _Source(inputs, zero, zero, *inputs.shape[2:])
    row_bytes = inputs[0].numel() * inputs.element_size() * 64  # a guess: no plan to go by

    def evaluate(ks: Tensor, ls: Tensor):
        zy, zx = zero.expand(len(ks)), zero.expand(len(ls))
        return model(source.cut(n, zy, zx, *inputs.shape[2:], setup.occluder(ks, ls)))

    per_batch = _batch_size(row_bytes, n, total, max_batch, budget)
    return _drops(setup, clean, evaluate, per_batch, progress)


def _incremental_drops(
    model, traced, setup: _Setup, max_batch, budget: int, progress: bool
) -> Tensor:
    """Score drops with each layer evaluated only where windows change it."""
    graph, ops_ = traced
    memory = _Memory()  # one pool for every convolution's outputs and every cut box
    for op in ops_.values():
        if op.params is not None:
            op.params.memory = memory
    inputs = setup.inputs
    n, total = inputs.shape[0], len(setup.wy) * len(setup.wx)
    clean = _clean_pass(graph, ops_, model, inputs)
    output = next(node for node in graph.nodes if node.op == "output")
    size = inputs.shape[2:]
    windows = _Reach(
        setup.wy,
        (setup.wy + setup.window[0]).clamp(max=size[0]),
        setup.wx,
        (setup.wx + setup.window[1]).clamp(max=size[1]),
    )
    plan = _plan(graph, ops_, clean, windows, memory)
    log.debug("occlusion boxes: %s", {k.name: (b.h, b.w, b.size) for k, b in plan.boxes.items()})

    def evaluate(ks: Tensor, ls: Tensor):
        return _Batch(plan, ks, ls, n, setup.occluder(ks, ls)).run()

    per_batch = _batch_size(_row_bytes(plan), n, total, max_batch, budget)
    return _drops(setup, setup.scores(clean[output], 1), evaluate, per_batch, progress)


def occlusion(
    model: torch.nn.Module,
    inputs: Tensor,
    target,
    *,
    window: int | Sequence[int] = 15,
    stride: int | Sequence[int] = 8,
    baseline: float | Tensor = 0.0,
    max_batch: int | None = None,
    memory_budget_bytes: int = 512 * 2**20,
    incremental: bool = True,
    progress: bool = False,
) -> Tensor:
    """Occlusion sensitivity: for each window position, the drop of the target score when
    the window (all channels) is replaced by ``baseline``; each pixel gets the mean drop of
    the windows that cover it. The same map as Captum's
    ``Occlusion(model).attribute(inputs, sliding_window_shapes=(C, *window),
    strides=(C, *stride), baselines=baseline, target=target)``: windows start at 0, stride,
    2 * stride, ... and the last one in each direction may be cut by the image's edge.

    The model runs in eval mode (each module's ``training`` flag is restored afterwards),
    without gradients.

    Args:
        model: a classifier returning scores Tensor[N, classes].
        inputs: Tensor[N, C, H, W].
        target: class index, an int or a Tensor[N].
        window: window height and width (an int for both); at most the image's size.
        stride: steps between windows (an int for both); at most ``window``.
        baseline: the value occluded pixels take: a number, or a Tensor broadcastable to
            ``inputs``.
        max_batch: most windows evaluated in one batch (default: as many as fit).
        memory_budget_bytes: bound on the activations of one batch, which sets how many
            windows go through the network at once.
        incremental: evaluate each layer only where a window can change it (exact); False
            evaluates the whole model on every occluded image.
        progress: show a ``tqdm`` progress bar over the batches.

    Returns:
        Tensor[N, C, H, W] shaped like ``inputs`` (the map repeats over the channels).
    """
    fn = "occlusion"
    check_model(fn, model)
    inputs = check_inputs(fn, inputs)
    n, c, h, w = inputs.shape
    window, stride = _pair(fn, "window", window), _pair(fn, "stride", stride)
    _check_geometry(fn, (h, w), window, stride)
    _check_budget(fn, max_batch, memory_budget_bytes)
    if n == 0:
        return inputs.new_zeros(inputs.shape)
    setup = _Setup(
        inputs,
        _check_baseline(fn, baseline, inputs),
        window,
        torch.tensor(_starts(h, window[0], stride[0])),
        torch.tensor(_starts(w, window[1], stride[1])),
        check_target(fn, target, n),
    )
    with evaluating(model), torch.no_grad():
        traced = _trace(model) if incremental else None
        if traced is None:
            drops = _whole_model_drops(model, setup, max_batch, memory_budget_bytes, progress)
        else:
            drops = _incremental_drops(
                model, traced, setup, max_batch, memory_budget_bytes, progress
            )
    heat = _assemble(drops, (h, w), window, stride)
    return heat.to(inputs)[:, None].expand(n, c, h, w).contiguous()
