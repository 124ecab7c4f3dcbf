"""Train fastcnn's digits network on the handwritten digits scikit-learn ships, for a few
epochs on the CPU, then report the test accuracy and save the training curves.

Run: python train_digits.py  (needs the viz extra: pip install "fastcnn[viz]")
Writes digits_curves.png and the checkpoints digits_run/last.pt and best.pt.
"""

from __future__ import annotations

import torch

import fastcnn


def train(epochs: int = 4, checkpoint: str | None = None):
    """A DigitsNet trained on the digits: returns (model, data, history)."""
    data = fastcnn.data.digits()  # 8x8 digits resized to 32x32; train/val/test splits
    torch.manual_seed(0)  # the initial weights
    model = fastcnn.models.DigitsNet(num_classes=data.num_classes, width=16)
    history = fastcnn.train.fit(
        model,
        data,
        epochs=epochs,
        batch_size=32,
        lr=0.1,
        scheduler="onecycle",
        device="cpu",  # fastcnn's kernels run on CPU tensors
        checkpoint=checkpoint,  # last.pt every epoch, best.pt at the best validation accuracy
        progress=False,
    )
    return model, data, history


def main() -> None:
    model, data, history = train(checkpoint="digits_run")
    print(f"{len(data.train)} training, {len(data.val)} validation, {len(data.test)} test images")
    for epoch, (loss, acc) in enumerate(zip(history.val_loss, history.val_accuracy), 1):
        print(f"epoch {epoch}: validation loss {loss:.3f}, accuracy {100 * acc:.1f}%")
    result = fastcnn.train.evaluate(model, data.test)
    print(f"test accuracy {100 * result['accuracy']:.1f}% on {result['count']} images")
    history.plot().savefig("digits_curves.png", dpi=100)
    print("wrote digits_curves.png and digits_run/best.pt")


if __name__ == "__main__":
    main()
