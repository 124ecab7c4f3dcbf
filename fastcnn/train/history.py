"""What a training run measured, per epoch and per step."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

_PER_EPOCH = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")


@dataclass
class History:
    """Per-epoch metrics and the loss of every optimizer step.

    ``loss`` / ``accuracy`` are the means over the epoch's training batches; ``val_loss`` /
    ``val_accuracy`` are measured after the epoch (``nan`` without validation data); ``lr`` is
    the learning rate at the epoch's end; ``seconds`` its wall time.
    """

    epoch: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)

    def append(self, **metrics: float) -> None:
        """Adds one epoch's metrics (every per-epoch field must be given)."""
        for name in _PER_EPOCH:
            getattr(self, name).append(metrics[name])

    def state_dict(self) -> dict:
        """Every field as a plain dict of lists (what checkpoints store)."""
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> History:
        """The History a :meth:`state_dict` describes."""
        return cls(**{k: list(v) for k, v in state.items()})

    def plot(self, ax=None):
        """Loss (per step and per epoch, log scale) and accuracy curves side by side.

        Args:
            ax: optional pair of matplotlib Axes to draw into.

        Returns:
            The matplotlib Figure.
        """
        if ax is None:
            from matplotlib.figure import Figure

            fig = Figure(figsize=(10, 4), layout="constrained")
            ax = fig.subplots(1, 2)
        loss_ax, acc_ax = ax
        if self.step_loss and self.epoch:
            per_epoch = len(self.step_loss) / len(self.epoch)
            x = [(i + 1) / per_epoch for i in range(len(self.step_loss))]
            loss_ax.plot(x, self.step_loss, color="0.75", lw=0.8, label="train (each step)")
        loss_ax.plot(self.epoch, self.loss, "o-", label="train (epoch mean)")
        if any(v == v for v in self.val_loss):  # not all nan
            loss_ax.plot(self.epoch, self.val_loss, "o-", label="validation")
        loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", yscale="log", title="Loss")
        loss_ax.legend()
        acc_ax.plot(self.epoch, [100 * a for a in self.accuracy], "o-", label="train")
        if any(v == v for v in self.val_accuracy):
            acc_ax.plot(self.epoch, [100 * a for a in self.val_accuracy], "o-", label="validation")
        acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
        acc_ax.legend()
        return loss_ax.figure
