"""The ``fastcnn`` command."""

from __future__ import annotations

import argparse
import json
import sys


def _info(args: argparse.Namespace) -> int:
    from . import info

    report = info()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"fastcnn {report['version']} (torch {report['torch']})")
    print(f"  CPU kernels: {report['isa']}, {report['threads']} threads")
    if report["cuda_compiled"]:
        print(
            f"  CUDA: compiled for {', '.join(report['cuda_archs'])} "
            f"(runtime {report['cuda_runtime']}, driver {report['cuda_driver'] or 'none'})"
        )
    else:
        print("  CUDA: not compiled into this build (CPU tensors only)")
    if not report["cuda_devices"]:
        print("  CUDA devices: none visible")
    for i, d in enumerate(report["cuda_devices"]):
        cap = ".".join(map(str, d["capability"]))
        print(f"  cuda:{i}: {d['name']} (sm {cap}, {d['total_memory'] / 2**30:.1f} GiB)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastcnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="what was built, which ISA and devices are in use")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=_info)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
