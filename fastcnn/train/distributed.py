"""Running the same fit under torchrun: process group, sampler, rank-0 duties."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger("fastcnn.train")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> World:
    """Joins the process group torchrun describes (WORLD_SIZE, RANK, MASTER_ADDR, ...) with
    gloo on the CPU and nccl on CUDA; a plain run is a world of one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    world = World(dist.get_rank(), dist.get_world_size())
    if world.is_main:
        log.info("distributed training: %d processes, backend %s", world.size, backend)
    return world


def all_sum(values: list[float], world: World, device: torch.device) -> list[float]:
    """Sums a few numbers over all processes (for epoch metrics)."""
    if world.size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
