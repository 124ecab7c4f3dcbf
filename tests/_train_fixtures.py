"""A tiny classification problem and model shared by the training tests and the DDP worker."""

import torch

import fastcnn


def tiny_data(n: int = 64, seed: int = 0) -> torch.utils.data.TensorDataset:
    """Two classes of 1x8x8 images: a bright left half or a bright right half, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = 0.3 * torch.rand(n, 1, 8, 8, generator=g)
    images[labels == 0, :, :, :4] += 0.7
    images[labels == 1, :, :, 4:] += 0.7
    return torch.utils.data.TensorDataset(images, labels)


def tiny_model(seed: int = 0, normalize: bool = False) -> torch.nn.Module:
    """Conv-relu-pool-conv-relu-GAP-linear from fastcnn.nn, no batch norm (so that data-parallel
    training equals single-process training on the same global batch)."""
    torch.manual_seed(seed)
    layers = [
        fastcnn.nn.Conv2d(1, 4, 3, padding=1),
        fastcnn.nn.ReLU(),
        fastcnn.nn.MaxPool2d(2),
        fastcnn.nn.Conv2d(4, 8, 3, padding=1),
        fastcnn.nn.ReLU(),
        fastcnn.nn.GlobalAvgPool2d(),
        torch.nn.Linear(8, 2),
    ]
    if normalize:
        layers.insert(0, fastcnn.data.Normalize(1))
    return torch.nn.Sequential(*layers)
