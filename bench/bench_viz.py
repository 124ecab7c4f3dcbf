"""Attribution benchmark: fastcnn.viz's occlusion, saliency and guided backprop against Captum.

Usage::

    python bench/bench_viz.py                  # the three occlusion targets of issue 6, etc.
    python bench/bench_viz.py --quick          # smaller ResNet input, one repetition, < 1 min
    python bench/bench_viz.py --models vgg,resnet18 --json out.json

Occlusion is timed on the reference networks at the sizes of issue 6 (ResNet-18 at 3x224x224
with 16x16 windows at stride 8, VGG at 3x64x64 with 8x8 at stride 4, the digits network at
1x32x32 with 4x4 at stride 2; ``--quick`` runs the ResNet at 3x112x112), one image, target 0.
Captum's ``Occlusion`` runs at its fastest ``perturbations_per_eval`` among 16, 64, 256 and
all windows in one batch (``--quick``: 16 and 64; each candidate timed once, the fastest again,
interleaved with fastcnn, ``--repeat`` times (3; ``--quick``: 1) or more for short tasks).
Each model is timed twice: as built (fastcnn layers), and as its torch.nn twin (the same
weights in ``nn.Conv2d`` / ``nn.MaxPool2d`` / ``nn.ReLU`` / ``nn.AdaptiveAvgPool2d``), with
fastcnn and Captum both given that model. Saliency and guided backprop are timed on a batch
of 8 images (ResNet: 2) against Captum's ``Saliency`` and ``GuidedBackprop`` with
``torch.utils.benchmark``.

Every comparison first checks that both sides give the same map (``assert_close``).
Models are randomly initialized (seeded) and in eval mode: timings do not depend on the
weights. ``torch.set_num_threads(2)``; times are medians of interleaved repetitions (the
machine is shared: the load average at start and end is printed with the table); glibc's
malloc thresholds pinned (steady_malloc.py; ``--default-malloc`` keeps glibc's own).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import steady_malloc
import torch
from torch.utils.benchmark import Timer

import fastcnn
import fastcnn.nn as fnn
from fastcnn.models import DigitsNet, ResNet18, VGGNet
from fastcnn.viz import guided_backprop, occlusion, saliency

THREADS = 2
MAX_REPEAT = 25


@dataclass
class Row:
    """One comparison: fastcnn and Captum seconds, and the ratio Captum / fastcnn."""

    task: str
    model: str
    shape: str
    fastcnn_s: float
    captum_s: float
    ratio: float
    note: str = ""


def torch_twin(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with the fastcnn layers swapped back for the torch.nn ones."""
    twin = copy.deepcopy(model)
    swaps = {
        fnn.Conv2d: torch.nn.Conv2d,
        fnn.MaxPool2d: torch.nn.MaxPool2d,
        fnn.ReLU: torch.nn.ReLU,
    }
    for parent in twin.modules():
        for name, child in parent.named_children():
            if type(child) in swaps:
                child.__class__ = swaps[type(child)]
            elif type(child) is fnn.GlobalAvgPool2d:
                pool = torch.nn.AdaptiveAvgPool2d(1)
                flat = torch.nn.Flatten() if not child.keepdim else torch.nn.Identity()
                setattr(parent, name, torch.nn.Sequential(pool, flat))
    return twin


def captum_occlusion(model, x, window, stride, per_eval):
    from captum.attr import Occlusion

    c = x.shape[1]
    return Occlusion(model).attribute(
        x,
        sliding_window_shapes=(c, window, window),
        strides=(c, stride, stride),
        baselines=0.0,
        target=0,
        perturbations_per_eval=per_eval,
    )


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median seconds of each function, the functions run in turn ``repeat`` times."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            times[name].append(seconds(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def check_same(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Equal within float32 tolerance, relative to the map's scale."""
    scale = float(expected.abs().max()) or 1.0
    torch.testing.assert_close(actual, expected, rtol=1e-3, atol=1e-4 * scale, msg=what)


def repetitions(seconds_each: float, repeat: int, budget: float) -> int:
    """At least ``repeat`` runs, more for short tasks (up to ``MAX_REPEAT``), so that a
    task's samples add up to about ``budget`` seconds: short timings are the noisiest."""
    return max(repeat, min(MAX_REPEAT, math.ceil(budget / max(seconds_each, 1e-6))))


def occlusion_rows(name, model, shape, window, stride, repeat, budget, quick) -> list[Row]:
    x = torch.randn(shape)
    n_windows = ((shape[2] - window + stride - 1) // stride + 1) ** 2
    sizes = (16, 64) if quick else (16, 64, 256, n_windows)
    candidates = sorted({min(p, n_windows) for p in sizes})
    ours = lambda m: occlusion(m, x, 0, window=window, stride=stride)  # noqa: E731
    ours(model)  # warm-up: tracing, kernel choice
    expected = ours(model)
    rows = []
    desc = f"{tuple(shape[1:])} w{window} s{stride}"
    for label, m in (("as built", model), ("torch.nn twin", torch_twin(model).eval())):
        tried = {}
        for p in candidates:
            what = f"{name} occlusion, Captum on the {label} model, ppe={p}"
            tried[p] = seconds(
                lambda m=m, p=p, what=what: check_same(
                    expected, captum_occlusion(m, x, window, stride, p), what
                )
            )
        best = min(tried, key=tried.__getitem__)
        if label != "as built":
            ours(m)  # warm-up on the twin
        t = interleaved(
            {
                "fastcnn": lambda m=m: ours(m),
                "captum": lambda m=m, p=best: captum_occlusion(m, x, window, stride, p),
            },
            repetitions(tried[best], repeat, budget),
        )
        note = f"Captum on the {label} model, perturbations_per_eval={best} ({n_windows} windows)"
        rows.append(
            Row(
                "occlusion", name, desc, t["fastcnn"], t["captum"], t["captum"] / t["fastcnn"], note
            )
        )
    return rows


def gradient_rows(name, model, shape, min_run_time: float) -> list[Row]:
    from captum.attr import GuidedBackprop, Saliency

    x = torch.randn(shape)
    target = torch.zeros(shape[0], dtype=torch.long)
    pairs = {
        "saliency": (
            lambda: saliency(model, x, target),
            lambda: Saliency(model).attribute(x, target=target),
        ),
        "guided_backprop": (
            lambda: guided_backprop(model, x, target),
            lambda: GuidedBackprop(model).attribute(x, target=target),
        ),
    }
    rows = []
    for task, (ours, theirs) in pairs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_same(ours(), theirs(), f"{name} {task}")
            t = {
                side: Timer("f()", globals={"f": f}, num_threads=THREADS)
                .blocked_autorange(min_run_time=min_run_time)
                .median
                for side, f in (("fastcnn", ours), ("captum", theirs))
            }
        rows.append(
            Row(
                task,
                name,
                str(tuple(shape)),
                t["fastcnn"],
                t["captum"],
                t["captum"] / t["fastcnn"],
                "Captum on the model as built",
            )
        )
    return rows


def print_table(rows: list[Row]) -> None:
    head = ("task", "model", "shape", "fastcnn s", "captum s", "ratio")
    print(f"{head[0]:16} {head[1]:8} {head[2]:26} {head[3]:>10} {head[4]:>10} {head[5]:>7}  note")
    for r in rows:
        print(
            f"{r.task:16} {r.model:8} {r.shape:26} {r.fastcnn_s:10.4f} {r.captum_s:10.4f} "
            f"{r.ratio:6.2f}x  {r.note}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ResNet at 112x112, one repetition")
    parser.add_argument("--repeat", type=int, default=None, help="timed repetitions (default 3)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    steady_malloc.add_flag(parser)
    parser.add_argument(
        "--models", default="digits,vgg,resnet18", help="comma-separated subset to run"
    )
    args = parser.parse_args()
    malloc = steady_malloc.pin(args.default_malloc)
    repeat = args.repeat or (1 if args.quick else 3)
    budget = 1.0 if args.quick else 4.0  # seconds of Captum samples per occlusion row
    torch.set_num_threads(THREADS)
    warnings.filterwarnings("ignore", module="captum")
    load_start = os.getloadavg()
    torch.manual_seed(0)
    resnet_size = 112 if args.quick else 224
    models = {
        "digits": (DigitsNet().eval(), (1, 1, 32, 32), 4, 2),
        "vgg": (VGGNet().eval(), (1, 3, 64, 64), 8, 4),
        "resnet18": (ResNet18().eval(), (1, 3, resnet_size, resnet_size), 16, 8),
    }
    rows: list[Row] = []
    chosen = args.models.split(",")
    unknown = sorted(set(chosen) - set(models))
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {sorted(models)}")
    for name, (model, shape, window, stride) in models.items():
        if name not in chosen:
            continue
        rows += occlusion_rows(name, model, shape, window, stride, repeat, budget, args.quick)
        batch = 2 if name == "resnet18" else 8
        rows += gradient_rows(name, model, (batch, *shape[1:]), 0.2 if args.quick else 0.5)
    load_end = os.getloadavg()
    print(
        f"fastcnn {fastcnn.__version__}, torch {torch.__version__}, {THREADS} threads; "
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
