"""Autograd glue shared by the ops."""

from __future__ import annotations

import torch


def forbid_double_backward(op: torch.library.CustomOpDef, forward_name: str) -> None:
    """Backward ops are ops too; differentiating them again raises a clear error."""

    def backward(ctx, *grads):
        raise RuntimeError(
            f"fastcnn.ops.{forward_name}: double backward (a gradient of its gradient) is not "
            "supported; compute higher-order derivatives with torch.nn.functional instead"
        )

    op.register_autograd(backward)
