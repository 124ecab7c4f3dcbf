"""Training: :func:`fit` a classifier (SGD with momentum by default), :func:`evaluate` it,
and read checkpoints back."""

from .checkpoint import load as load_checkpoint
from .history import History
from .loop import Step, evaluate, fit

__all__ = ["History", "Step", "evaluate", "fit", "load_checkpoint"]
