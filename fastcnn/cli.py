"""The ``fastcnn`` command: ``info``, ``train``, ``demo``, ``viz``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _info(args: argparse.Namespace) -> int:
    from . import info
    from ._info import cuda_targets

    report = info()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"fastcnn {report['version']} (torch {report['torch']})")
    print(f"  CPU kernels: {report['isa']}, {report['threads']} threads")
    if report["cuda_compiled"]:
        print(
            f"  CUDA: compiled for {cuda_targets(report['cuda_archs'])} "
            f"(runtime {report['cuda_runtime']}, driver {report['cuda_driver'] or 'none'}); "
            "its kernels are not yet verified on a GPU, so the ops reject CUDA tensors unless "
            "FASTCNN_CUDA_UNVERIFIED=1"
        )
    else:
        print("  CUDA: not compiled into this build: CUDA tensors are unsupported, CPU only")
    if not report["cuda_devices"]:
        print("  CUDA devices: none visible")
    for i, d in enumerate(report["cuda_devices"]):
        cap = ".".join(map(str, d["capability"]))
        print(f"  cuda:{i}: {d['name']} (sm {cap}, {d['total_memory'] / 2**30:.1f} GiB)")
    return 0


def _model_kwargs(name: str, data, width: int | None) -> dict:
    kwargs = {"num_classes": data.num_classes, "in_channels": data.in_channels}
    if width is not None:
        kwargs["width"] = width
    if name == "resnet18" and max(data.image_size) <= 64:
        kwargs["small_input"] = True
    return kwargs


def _train(args: argparse.Namespace) -> int:
    """Trains a reference model; writes checkpoints, curves.png and metrics.json to --out."""
    import torch

    from . import data as fdata
    from . import models, train

    out = Path(args.out)
    torch.manual_seed(args.seed)  # the model's initial weights
    dataset = fdata.load(args.data)
    kwargs = _model_kwargs(args.model, dataset, args.width)
    model = models.build(args.model, **kwargs)
    print(
        f"training {args.model} on {args.data}: {len(dataset.train)} training images "
        f"{dataset.in_channels}x{dataset.image_size[0]}x{dataset.image_size[1]}, "
        f"{dataset.num_classes} classes, {args.epochs} epochs"
    )
    meta = {
        "model": args.model,
        "model_kwargs": kwargs,
        "classes": dataset.classes,
        "data": args.data,
        "image_size": list(dataset.image_size),
    }
    try:
        history = train.fit(
            model,
            dataset,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            scheduler=args.scheduler,
            seed=args.seed,
            checkpoint=out,
            resume=args.resume,
            progress=not args.no_progress,
            meta=meta,
        )
    except KeyboardInterrupt:
        print(f"\ninterrupted: checkpoint saved in {out / 'last.pt'}; continue with --resume")
        return 130
    result = train.evaluate(model, dataset.test if dataset.test is not None else dataset.val)
    fig = history.plot()
    fig.savefig(out / "curves.png", dpi=120)
    summary = {
        "test_accuracy": result["accuracy"],
        "test_loss": result["loss"],
        "epochs": len(history.epoch),
        "seconds": sum(history.seconds),
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    print(
        f"test accuracy: {100 * result['accuracy']:.2f}% ({result['count']} images), "
        f"training took {summary['seconds']:.0f} s"
    )
    print(f"wrote {out / 'curves.png'}, {out / 'metrics.json'}, checkpoints in {out}")
    if args.command == "demo":
        from .demo import write_report

        page = write_report(model, dataset, out, curves="curves.png")
        print(f"wrote every visualization and {page}")
    return 0


def _viz(args: argparse.Namespace) -> int:
    """Runs one visualization technique on a checkpoint and an image; writes a PNG."""
    from . import train
    from .viz import run

    model, meta = train.load_model(args.checkpoint)
    channels = meta["model_kwargs"].get("in_channels", 3)
    size = tuple(meta.get("image_size") or ()) or None
    image = run.read_image(args.image, channels, size)
    style = run.read_image(args.style, channels, None) if args.style else None
    neuron = tuple(int(v) for v in args.neuron.split(",")) if args.neuron else None
    fig = run.run(
        args.technique,
        model,
        image,
        layer=args.layer,
        target=args.target,
        channel=args.channel,
        neuron=neuron,
        window=args.window,
        stride=args.stride,
        style=style,
        classes=meta.get("classes"),
    )
    out = Path(args.out or f"{args.technique}.png")
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs the ``fastcnn`` command with ``argv`` (default: ``sys.argv[1:]``); returns the
    exit status."""
    parser = argparse.ArgumentParser(prog="fastcnn", description="fastcnn's command line")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every epoch")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="what was built, which ISA and devices are in use")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=_info)

    def training_options(p: argparse.ArgumentParser, epochs: int) -> None:
        p.add_argument("--epochs", type=int, default=epochs)
        p.add_argument("--batch-size", type=int, default=64)
        p.add_argument("--lr", type=float, default=0.05)
        p.add_argument(
            "--scheduler", default="onecycle", choices=["constant", "step", "cosine", "onecycle"]
        )
        p.add_argument("--width", type=int, default=None, help="the model's base width")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser("train", help="train a reference model on a dataset")
    p.add_argument(
        "--data",
        required=True,
        help="'digits', or a folder: class sub-folders, MNIST IDX files or CIFAR-10 batches",
    )
    p.add_argument("--model", default="digits", help="digits, vgg or resnet18")
    p.add_argument("--out", required=True, help="folder for checkpoints and curves")
    training_options(p, epochs=20)
    p.set_defaults(run=_train)

    p = sub.add_parser(
        "demo", help="train DigitsNet on the handwritten digits; save curves and visualizations"
    )
    p.add_argument("--out", default="fastcnn-demo", help="output folder (default ./fastcnn-demo)")
    training_options(p, epochs=15)
    p.set_defaults(run=_train, data="digits", model="digits")

    from .viz.run import TECHNIQUES

    p = sub.add_parser("viz", help="run a visualization on a checkpoint and an image")
    p.add_argument("technique", choices=TECHNIQUES)
    p.add_argument("--checkpoint", required=True, help="a .pt written by fastcnn train / demo")
    p.add_argument("--image", required=True, help="an image file (resized to the model's input)")
    p.add_argument("--layer", help="dotted module name (default: first or last convolution)")
    p.add_argument("--target", type=int, help="class index (default: the predicted class)")
    p.add_argument("--channel", type=int, help="a channel of --layer")
    p.add_argument("--neuron", help="c,y,x: one neuron of --layer (guided-backprop)")
    p.add_argument("--window", type=int, default=4, help="occlusion window (pixels)")
    p.add_argument("--stride", type=int, default=2, help="occlusion stride (pixels)")
    p.add_argument("--style", help="style image (style-transfer)")
    p.add_argument("--out", help="output PNG (default: TECHNIQUE.png)")
    p.set_defaults(run=_viz)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
