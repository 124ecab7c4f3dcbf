"""fastcnn.info() and the ``fastcnn info`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import fastcnn
from fastcnn import cli

ISAS = ["generic", "avx2", "avx512"]
KEYS = {
    "version": str,
    "isa": str,
    "cuda_compiled": bool,
    "cuda_archs": list,
    "cuda_runtime": (str, type(None)),
    "cuda_driver": (str, type(None)),
    "cuda_devices": list,
    "threads": int,
    "torch": str,
}


def _no_gpu() -> bool:
    return not torch.cuda.is_available() and not os.path.exists("/dev/nvidia0")


def _python(code_or_args, env=None, **kw) -> subprocess.CompletedProcess:
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        **kw,
    )


class TestInfo:
    def test_keys_and_types(self):
        report = fastcnn.info()
        assert report.keys() == KEYS.keys()
        for key, kind in KEYS.items():
            assert isinstance(report[key], kind), key
        assert report["version"] == fastcnn.__version__
        assert report["isa"] in ISAS
        assert report["torch"] == torch.__version__
        assert all(isinstance(a, str) and a for a in report["cuda_archs"])
        if not report["cuda_compiled"]:
            assert report["cuda_archs"] == [] and report["cuda_runtime"] is None
        json.dumps(report)  # serializable

    def test_threads_follow_torch(self):
        before = torch.get_num_threads()
        try:
            assert fastcnn.info()["threads"] == before
            torch.set_num_threads(1)
            assert fastcnn.info()["threads"] == 1
        finally:
            torch.set_num_threads(before)
        assert fastcnn.info()["threads"] == torch.get_num_threads()

    @pytest.mark.skipif(not _no_gpu(), reason="a GPU is present")
    def test_no_cuda_devices_without_gpu(self):
        report = fastcnn.info()
        assert report["cuda_devices"] == []

    def test_cli_in_process(self, capsys):
        assert cli.main(["info", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(fastcnn.info()))
        assert cli.main(["info"]) == 0
        out = capsys.readouterr().out
        assert f"fastcnn {fastcnn.__version__}" in out
        assert fastcnn.info()["isa"] in out

    def test_cli_bad_command(self, capsys):
        with pytest.raises(SystemExit) as e:
            cli.main(["no-such-command"])
        assert e.value.code != 0
        assert "invalid choice" in capsys.readouterr().err


class TestCommand:
    def test_json(self):
        proc = _python(["-m", "fastcnn.cli", "info", "--json"])
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report.keys() == KEYS.keys()
        assert report["version"] == fastcnn.__version__
        assert report["isa"] in ISAS
        assert report["threads"] == torch.get_num_threads()

    def test_text(self):
        proc = _python(["-m", "fastcnn.cli", "info"])
        assert proc.returncode == 0, proc.stderr
        assert f"fastcnn {fastcnn.__version__}" in proc.stdout
        assert "CPU kernels:" in proc.stdout

    @pytest.mark.parametrize("isa", ISAS)
    def test_isa_env(self, isa):
        """FASTCNN_ISA caps the ISA, and every ISA's conv2d agrees with F.conv2d."""
        order = {name: i for i, name in enumerate(ISAS)}
        native = fastcnn.info()["isa"]
        if order[isa] > order[native]:
            pytest.skip(f"this CPU runs {native}, not {isa}")
        code = textwrap.dedent(
            """
            import json, torch, torch.nn.functional as F, fastcnn
            torch.manual_seed(0)
            results = {"isa": fastcnn.info()["isa"]}
            cases = [
                ((2, 5, 11, 9), (7, 5, 3, 3), dict(stride=1, padding=1)),
                ((1, 16, 9, 10), (24, 16, 1, 1), dict(stride=2)),
                ((2, 6, 8, 8), (6, 3, 3, 2), dict(padding=(1, 0), dilation=(2, 1), groups=2)),
                ((3, 4, 7, 7), (33, 4, 5, 5), dict(padding=2)),
            ]
            for dtype in (torch.float32, torch.float64):
                tol = 1e-4 if dtype == torch.float32 else 1e-10
                for fmt in (torch.contiguous_format, torch.channels_last):
                    for xs, ws, kw in cases:
                        x = torch.randn(xs, dtype=dtype).contiguous(memory_format=fmt)
                        x.requires_grad_()
                        w = torch.randn(ws, dtype=dtype, requires_grad=True)
                        b = torch.randn(ws[0], dtype=dtype, requires_grad=True)
                        out = fastcnn.ops.conv2d(x, w, b, **kw)
                        grads = torch.autograd.grad(out, (x, w, b), torch.ones_like(out))
                        ref = F.conv2d(x, w, b, **kw)
                        refs = torch.autograd.grad(ref, (x, w, b), torch.ones_like(ref))
                        for a, e in zip((out, *grads), (ref, *refs)):
                            torch.testing.assert_close(a, e, rtol=tol, atol=tol)
            print(json.dumps(results))
            """
        )
        proc = _python(code, env={"FASTCNN_ISA": isa})
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout.strip().splitlines()[-1])["isa"] == isa
        if isa == "generic":  # the command reports the capped ISA too
            cmd = _python(["-m", "fastcnn.cli", "info", "--json"], env={"FASTCNN_ISA": isa})
            assert cmd.returncode == 0, cmd.stderr
            assert json.loads(cmd.stdout)["isa"] == isa
