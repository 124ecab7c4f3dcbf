"""Learning-rate schedules by name, stepped once per optimizer step."""

from __future__ import annotations

import math

import torch

NAMES = ("constant", "step", "cosine", "onecycle")


def make(name: str | None, optimizer: torch.optim.Optimizer, total_steps: int):
    """A scheduler over ``total_steps`` optimizer steps.

    - ``"constant"`` / None: the optimizer's learning rate throughout.
    - ``"step"``: divided by 10 after 1/2 and again after 3/4 of the steps.
    - ``"cosine"``: cosine decay to 0.
    - ``"onecycle"``: warm-up over the first 30% to the learning rate, then cosine decay
      (:class:`torch.optim.lr_scheduler.OneCycleLR`).
    """
    name = name or "constant"
    if name not in NAMES:
        raise ValueError(f"fit: scheduler must be one of {NAMES} or a scheduler, got {name!r}")
    total = max(total_steps, 1)
    if name == "onecycle":
        lrs = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lrs, total_steps=total)
    factors = {
        "constant": lambda s: 1.0,
        "step": lambda s: 0.1 ** ((s >= total // 2) + (s >= 3 * total // 4)),
        "cosine": lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)),
    }
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors[name])
