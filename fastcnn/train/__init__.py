"""Training: :func:`fit` a classifier (SGD with momentum by default), :func:`evaluate` it,
and read checkpoints (and the models they hold) back."""

from .checkpoint import load as load_checkpoint
from .checkpoint import load_model
from .history import History
from .loop import Step, evaluate, fit

__all__ = ["History", "Step", "evaluate", "fit", "load_checkpoint", "load_model"]
