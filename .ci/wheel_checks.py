"""Checks of a built fastcnn wheel and sdist that need no install (called by .ci/wheel).

- the extension needs neither libtorch (one wheel for every torch) nor libcudart (the CUDA
  runtime is linked statically: the driver is enough), nor libpython;
- the CUDA code was compiled for the expected architectures (read from the fatbinary);
- only the ISA micro-kernel objects (csrc/cpu/avx2, csrc/cpu/avx512) hold AVX instructions,
  and none of their inline/template functions is also defined elsewhere (the linker would keep
  one copy for both, and a generic caller could run AVX-512 code): the wheel runs on any
  x86-64 CPU;
- the sdist holds exactly the tracked sources (less .ci/, as pyproject's sdist.exclude says).
"""

from __future__ import annotations

import argparse
import re
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

FORBIDDEN_NEEDS = re.compile(r"libtorch|libc10|libcudart|libcuda\.|libpython")
AVX = re.compile(r"%[yz]mm\d|%k[0-7]\b|^\s*[0-9a-f]+:\s+v[a-z0-9]+\s", re.M)
ISA_DIRS = ("/avx2/", "/avx512/")
FATBIN_MAGIC = 0xBA55ED50


def run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def fail(message: str) -> None:
    sys.exit(f"wheel_checks: FAILED: {message}")


def check_needed(so: Path) -> None:
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", run("readelf", "-d", str(so)))
    print(f"{so.name} needs: {', '.join(needed)}")
    bad = [lib for lib in needed if FORBIDDEN_NEEDS.search(lib)]
    if bad:
        fail(f"the extension must not link {bad} (torch-free, static CUDA runtime)")


def fatbin_entries(so: Path) -> list[tuple[str, int]]:
    """(kind, sm) of every entry of the .nv_fatbin section: kind 'elf' (SASS) or 'ptx'.

    A fatbinary is a 16-byte header (magic 0xBA55ED50, version, header size, payload size)
    followed by entries, each a header (kind: 1 PTX, 2 ELF; its size; payload size; the
    architecture at byte 28) and its payload."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "fatbin"
        run("objcopy", "-O", "binary", "--only-section=.nv_fatbin", str(so), str(out))
        data = out.read_bytes()
    entries, off = [], 0
    while off + 16 <= len(data):
        magic, _, header, size = struct.unpack_from("<IHHQ", data, off)
        if magic != FATBIN_MAGIC:
            off += 8  # fatbinaries are 8-byte aligned in the section
            continue
        end, off = off + header + size, off + header
        while off < end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, off)
            (arch,) = struct.unpack_from("<I", data, off + 28)
            entries.append(({1: "ptx", 2: "elf"}.get(kind, str(kind)), arch))
            off += entry_header + payload
    return entries


def check_cuda(so: Path, archs: list[int], ptx: list[int]) -> None:
    entries = fatbin_entries(so)
    print(f"CUDA code in {so.name}: {sorted(entries)}")
    sass = sorted({a for k, a in entries if k == "elf"})
    virtual = sorted({a for k, a in entries if k == "ptx"})
    if sass != sorted(archs) or virtual != sorted(ptx):
        fail(f"expected SASS for sm {archs} and PTX for {ptx}, found SASS {sass}, PTX {virtual}")


def _defined(obj: Path) -> dict[str, str]:
    """The symbols ``obj`` defines, with nm's type letter (W: weak, as inline functions)."""
    lines = run("nm", "--defined-only", "--format=posix", str(obj)).splitlines()
    return dict(line.split()[:2] for line in lines)


def check_objects(objects: Path) -> None:
    files = sorted(p for p in objects.rglob("*.o") if ".dir" in p.parent.as_posix())
    if not files:
        fail(f"no object files under {objects}")
    isa = [p for p in files if any(d in p.as_posix() for d in ISA_DIRS)]
    for obj in files:
        if obj in isa or obj.name.endswith(".cu.o"):
            continue
        hits = AVX.findall(run("objdump", "-d", "--no-show-raw-insn", str(obj)))
        if hits:
            fail(f"{obj} holds AVX instructions ({hits[:3]}): only {ISA_DIRS} may")
    symbols = {p: _defined(p) for p in files}
    for obj in isa:
        weak = {name for name, kind in symbols[obj].items() if kind in "Ww"}
        for other in files:
            shared = weak & symbols[other].keys() if other != obj else set()
            if shared:
                fail(f"{obj.name} and {other} both define {sorted(shared)[:3]}: rename them")
    print(f"AVX code only in {[p.relative_to(objects).as_posix() for p in isa]}; no shared symbols")


def check_sdist(sdist: Path) -> None:
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    files = {n for n in names if not n.endswith("/")} - {"PKG-INFO"}
    tracked = {f for f in run("git", "ls-files").splitlines() if not f.startswith(".ci/")}
    missing, extra = sorted(tracked - files), sorted(files - tracked - {""})
    extra = [n for n in extra if not any(f.startswith(n + "/") for f in tracked)]
    if missing or extra:
        fail(f"the sdist differs from the tracked sources: missing {missing}, extra {extra}")
    print(f"{sdist.name}: the {len(tracked)} tracked files (less .ci/), nothing else")


def _ints(csv: str) -> list[int]:
    return [int(a) for a in csv.split(",") if a]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, required=True)
    parser.add_argument("--sdist", type=Path, required=True)
    parser.add_argument("--objects", type=Path, required=True, help="the build's CMakeFiles")
    parser.add_argument("--cuda-archs", default="", help="SASS expected, e.g. 80,86,89,90")
    parser.add_argument("--ptx", default="", help="PTX expected, e.g. 90")
    args = parser.parse_args()

    for build_file in ("CMakeLists.txt", "pyproject.toml"):
        if "march=native" in Path(build_file).read_text():
            fail(f"{build_file} asks for -march=native: release builds dispatch at run time")
    with tempfile.TemporaryDirectory() as tmp:
        zipfile.ZipFile(args.wheel).extractall(tmp)
        (so,) = Path(tmp, "fastcnn").glob("_C*.so")
        grafted = sorted(p.name for p in Path(tmp).glob("fastcnn.libs/*"))
        print(f"libraries auditwheel grafted into the wheel: {grafted}")
        check_needed(so)
        if args.cuda_archs or args.ptx:
            check_cuda(so, _ints(args.cuda_archs), _ints(args.ptx))
    check_objects(args.objects)
    check_sdist(args.sdist)
    print("wheel_checks: OK")


if __name__ == "__main__":
    main()
