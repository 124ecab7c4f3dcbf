"""Run by tests/test_train.py under torchrun: fits the shared tiny model on the shared data
and saves this rank's final weights."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _train_fixtures import tiny_data, tiny_model  # noqa: E402

import fastcnn  # noqa: E402

out = Path(sys.argv[1])
model = tiny_model()
fastcnn.train.fit(
    model,
    tiny_data(),
    epochs=2,
    batch_size=16,
    lr=0.1,
    progress=False,
    normalize=False,
    device="cpu",
)
rank = torch.distributed.get_rank()
torch.save(model.state_dict(), out / f"rank{rank}.pt")
torch.distributed.destroy_process_group()
