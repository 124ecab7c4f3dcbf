"""Drop fastcnn's layers into an existing PyTorch model with one call, and check that the
converted model computes what the original does: outputs and gradients, NCHW and
channels_last.

Run: python convert_model.py
"""

import time

import torch
from torch import nn

import fastcnn


class SmallNet(nn.Module):
    """A plain torch CNN: two conv blocks, a residual 3x3 pair, global pooling, a classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )  # fmt: skip
        self.block = nn.Sequential(
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1)
        )
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.relu(x + self.block(x))
        return self.fc(self.pool(x).flatten(1))


def best_of(fn, repeats: int = 5) -> float:
    """The fastest of a few runs, in milliseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def main() -> None:
    torch.manual_seed(0)
    model = SmallNet().eval()
    fast = fastcnn.nn.convert(model)  # a converted copy; `model` is left as it was
    swapped = [
        f"{name}: {type(m).__name__}"
        for name, m in fast.named_modules()
        if type(m).__module__.startswith("fastcnn")
    ]
    print(f"converted {len(swapped)} layers:", ", ".join(swapped))

    for memory_format in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(16, 3, 64, 64).contiguous(memory_format=memory_format)
        outputs, grads = [], []
        for net in (model, fast):
            inp = x.clone().requires_grad_()
            out = net(inp)
            out.square().sum().backward()
            outputs.append(out.detach())
            grads.append(inp.grad)
            net.zero_grad()
        torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-4)
        print(
            f"{str(memory_format).split('.')[-1]:>17}: outputs differ by at most "
            f"{(outputs[1] - outputs[0]).abs().max():.1e}, input gradients by "
            f"{(grads[1] - grads[0]).abs().max():.1e}"
        )

    x = torch.randn(16, 3, 64, 64)
    with torch.no_grad():
        ms_torch, ms_fast = best_of(lambda: model(x)), best_of(lambda: fast(x))
    print(
        f"forward, batch 16, {torch.get_num_threads()} threads: torch {ms_torch:.1f} ms, "
        f"fastcnn {ms_fast:.1f} ms"
    )


if __name__ == "__main__":
    main()
