"""A tensor on a device fastcnn has no kernels for (CUDA, today) gets an error naming the op,
the argument and what this build holds. Tested without a GPU: fake CUDA tensors take the
same path through the functional API and the nn layers as real ones."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import fastcnn
from fastcnn._info import cuda_targets
from fastcnn.ops._boundary import _C, unsupported_device


@pytest.fixture(autouse=True)
def _cuda_kernels_off(monkeypatch):
    """The rejection these tests check is the state without the opt-in; a GPU session runs
    the suite with FASTCNN_CUDA_UNVERIFIED=1 set."""
    monkeypatch.delenv("FASTCNN_CUDA_UNVERIFIED", raising=False)


def cpu(*shape):
    return torch.randn(shape)


def gpu(*shape):
    return torch.randn(shape, device="cuda")


CALLS = [
    ("conv2d", "input", lambda: fastcnn.ops.conv2d(gpu(1, 2, 5, 5), cpu(3, 2, 3, 3))),
    ("conv2d", "weight", lambda: fastcnn.ops.conv2d(cpu(1, 2, 5, 5), gpu(3, 2, 3, 3))),
    ("conv2d", "bias", lambda: fastcnn.ops.conv2d(cpu(1, 2, 5, 5), cpu(3, 2, 3, 3), gpu(3))),
    ("max_pool2d", "input", lambda: fastcnn.ops.max_pool2d(gpu(1, 2, 4, 4), 2)),
    ("global_avg_pool2d", "input", lambda: fastcnn.ops.global_avg_pool2d(gpu(1, 2, 4, 4))),
    ("relu", "input", lambda: fastcnn.ops.relu(gpu(3))),
    ("guided_relu", "input", lambda: fastcnn.ops.guided_relu(gpu(3))),
    ("conv2d", "input", lambda: fastcnn.nn.Conv2d(2, 3, 3)(gpu(1, 2, 5, 5))),
    ("max_pool2d", "input", lambda: fastcnn.nn.MaxPool2d(2)(gpu(1, 2, 4, 4))),
    ("global_avg_pool2d", "input", lambda: fastcnn.nn.GlobalAvgPool2d()(gpu(1, 2, 4, 4))),
    ("relu", "input", lambda: fastcnn.nn.ReLU()(gpu(1, 2, 4, 4))),
    ("guided_relu", "input", lambda: fastcnn.nn.GuidedReLU()(gpu(1, 2, 4, 4))),
]


@pytest.mark.parametrize(("op", "name", "call"), CALLS)
def test_cuda_tensor_gets_a_clear_error(op, name, call):
    with FakeTensorMode(), pytest.raises(RuntimeError) as e:
        call()
    message = str(e.value)
    assert message.startswith(
        f"{op}: {name} is on cuda:0, but fastcnn has no verified CUDA kernels yet"
    )
    assert "its ops take CPU tensors only: move the tensors to the CPU with .cpu()" in message


def test_message_says_what_was_built():
    message = str(unsupported_device("conv2d", "input", torch.device("cuda", 1)))
    assert message.startswith(
        "conv2d: input is on cuda:1, but fastcnn has no verified CUDA kernels yet"
    )
    if _C.cuda_compiled:
        targets = cuda_targets(fastcnn.info()["cuda_archs"])
        assert f"this build's CUDA kernels, for {targets}, are not yet verified" in message
    else:
        assert "(this is a CPU-only build)" in message


def test_other_devices_are_named():
    message = str(unsupported_device("relu", "input", torch.device("mps")))
    assert message.startswith("relu: input is on mps, but fastcnn has no MPS kernels yet")


def test_cpu_and_meta_tensors_pass():
    x = torch.empty(1, 2, 5, 5, device="meta")
    assert fastcnn.ops.conv2d(x, torch.empty(3, 2, 3, 3, device="meta")).shape == (1, 3, 3, 3)
    assert fastcnn.ops.relu(torch.tensor([-1.0, 2.0])).tolist() == [0.0, 2.0]


@pytest.mark.parametrize(
    ("archs", "targets"),
    [
        (["80-real", "86-real", "89-real", "90"], "sm_80, sm_86, sm_89, sm_90 + PTX compute_90"),
        (["90a-real", "100-virtual"], "sm_90a + PTX compute_100"),
        (["native"], "native"),
        ([], ""),
    ],
)
def test_cuda_targets_spell_out_what_the_gpu_gets(archs, targets):
    assert cuda_targets(archs) == targets
