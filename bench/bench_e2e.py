"""End-to-end benchmark: whole networks after ``fastcnn.nn.convert`` against the same torch.nn
networks, and the fixed cost of one op call.

Usage::

    python bench/bench_e2e.py                 # digits, VGG (CIFAR) and ResNet-18 networks
    python bench/bench_e2e.py --quick         # digits and VGG, shorter timings
    python bench/bench_e2e.py --json out.json

Models (BENCH.md, "End-to-end"): the digits network on 1x32x32, the VGG-style network on
3x32x32 (both batch 64) and the ResNet-18-style network on 3x224x224 (batch 8). Each is built
once from torch.nn layers (seeded, random weights) and once converted with
``fastcnn.nn.convert``. Timed per model:

- inference: one batch forward in eval mode under ``torch.inference_mode``;
- training step: forward in train mode, cross-entropy, backward, SGD with momentum 0.9.

Before timing, the two networks must give the same logits and the same parameter gradients
(``assert_close``, relative to each tensor's scale). The fixed cost of one call is each
public op on a 1x2x4x4 input (conv with a 2x2x3x3 weight), without and with autograd.

Protocol: ``torch.set_num_threads(2)``; ``torch.utils.benchmark.Timer(num_threads=2)``,
``blocked_autorange(min_run_time=...)``, medians; torch and fastcnn timed alternately, twice
each, the faster median of each kept (the machine is shared: load averages are printed);
glibc's malloc thresholds pinned (steady_malloc.py; ``--default-malloc`` keeps glibc's own).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from dataclasses import asdict, dataclass
from functools import partial

import steady_malloc
import torch
import torch.nn.functional as F
from bench_viz import torch_twin
from torch.utils.benchmark import Timer

import fastcnn
import fastcnn.ops as fo
from fastcnn.models import DigitsNet, ResNet18, VGGNet
from fastcnn.nn import convert

THREADS = 2


@dataclass
class Row:
    """One comparison: seconds per call on each side and the ratio torch / fastcnn."""

    task: str
    case: str
    fastcnn_s: float
    torch_s: float
    ratio: float


def median_seconds(fn, min_run_time: float) -> float:
    return (
        Timer("fn()", globals={"fn": fn}, num_threads=THREADS)
        .blocked_autorange(min_run_time=min_run_time)
        .median
    )


def compare(task: str, case: str, fns: dict, min_run_time: float) -> Row:
    """Alternate the two sides twice and keep each side's faster median."""
    best = {side: float("inf") for side in fns}
    for _ in range(2):
        for side, fn in fns.items():
            best[side] = min(best[side], median_seconds(fn, min_run_time))
    return Row(task, case, best["fastcnn"], best["torch"], best["torch"] / best["fastcnn"])


def check_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    scale = float(expected.abs().max()) or 1.0
    torch.testing.assert_close(actual, expected, rtol=2e-3, atol=2e-3 * scale, msg=what)


def training_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def check_models(name: str, reference: torch.nn.Module, converted: torch.nn.Module, x, y):
    """Same logits in eval mode, and same parameter gradients of one training loss. The
    gradients are compared in float64: in float32, rounding differences of 1e-6 flip the
    argmax of max-pool windows whose two largest values are that close, which moves whole
    gradient entries."""
    with torch.inference_mode():
        check_close(converted.eval()(x), reference.eval()(x), f"{name}: logits")
    grads = []
    for model in (copy.deepcopy(reference).double(), copy.deepcopy(converted).double()):
        model.train()
        x = x.double()
        F.cross_entropy(model(x), y).backward()
        grads.append({k: p.grad for k, p in model.named_parameters()})
    for key, expected in grads[0].items():
        check_close(grads[1][key], expected, f"{name}: gradient of {key}")


def model_rows(name: str, build, shape, min_run_time: float) -> list[Row]:
    torch.manual_seed(0)
    reference = torch_twin(build())
    converted = convert(reference)
    x = torch.randn(shape)
    y = torch.randint(0, 10, (shape[0],))
    check_models(name, reference, converted, x, y)
    case = f"{name} {'x'.join(map(str, shape))}"
    rows = []
    with torch.inference_mode():
        models = {"fastcnn": converted.eval(), "torch": reference.eval()}
        rows.append(
            compare(
                "inference",
                case,
                {side: (lambda m=m: m(x)) for side, m in models.items()},
                min_run_time,
            )
        )
    # Each side trains its own copy, so the two steps see the same weights' statistics.
    steps = {
        "fastcnn": training_step(copy.deepcopy(converted).train(), x, y),
        "torch": training_step(copy.deepcopy(reference).train(), x, y),
    }
    rows.append(compare("training step", case, steps, min_run_time))
    return rows


def call_cost_rows(min_run_time: float) -> list[Row]:
    x = torch.randn(1, 2, 4, 4)
    w = torch.randn(2, 2, 3, 3)
    pairs = {
        "conv2d": (lambda t: fo.conv2d(t, w, padding=1), lambda t: F.conv2d(t, w, padding=1)),
        "max_pool2d": (lambda t: fo.max_pool2d(t, 2), lambda t: F.max_pool2d(t, 2)),
        "global_avg_pool2d": (fo.global_avg_pool2d, lambda t: F.adaptive_avg_pool2d(t, 1)),
        "relu": (fo.relu, torch.relu),
    }
    rows = []
    for op, (ours, theirs) in pairs.items():
        check_close(ours(x).reshape(-1), theirs(x).reshape(-1), f"{op} on a tiny tensor")
        calls = {"fastcnn": partial(ours, x), "torch": partial(theirs, x)}
        rows.append(compare("call, no grad", op, calls, min_run_time))
        xg = x.clone().requires_grad_()
        steps = {"fastcnn": partial(backward, ours, xg), "torch": partial(backward, theirs, xg)}
        rows.append(compare("call + backward", op, steps, min_run_time))
    return rows


def backward(fn, x: torch.Tensor) -> None:
    fn(x).sum().backward()


def print_table(rows: list[Row]) -> None:
    print(f"{'task':16} {'case':28} {'fastcnn ms':>11} {'torch ms':>10} {'ratio':>7}")
    for r in rows:
        print(
            f"{r.task:16} {r.case:28} {r.fastcnn_s * 1e3:11.4f} {r.torch_s * 1e3:10.4f} "
            f"{r.ratio:6.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits and VGG only, shorter runs")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    steady_malloc.add_flag(parser)
    args = parser.parse_args()
    malloc = steady_malloc.pin(args.default_malloc)
    torch.set_num_threads(THREADS)
    min_run_time = 0.3 if args.quick else 1.0
    load_start = os.getloadavg()
    models = [
        ("digits", DigitsNet, (64, 1, 32, 32)),
        ("vgg", VGGNet, (64, 3, 32, 32)),
        *([] if args.quick else [("resnet18", lambda: ResNet18(num_classes=10), (8, 3, 224, 224))]),
    ]
    rows = call_cost_rows(min_run_time)
    for name, build, shape in models:
        rows += model_rows(name, build, shape, min_run_time)
    load_end = os.getloadavg()
    print(
        f"fastcnn {fastcnn.__version__}, torch {torch.__version__}, {THREADS} threads, "
        f"isa {fastcnn.info()['isa']}; "
        f"load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end"
    )
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "load_average": [load_start, load_end],
                    "malloc": malloc,
                    "rows": [asdict(r) for r in rows],
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
