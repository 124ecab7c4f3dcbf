"""Why did the network say "7"? Train the digits network briefly, then draw saliency,
guided backpropagation and Grad-CAM maps for a few test digits into one PNG.

Run: python explain_digits.py  (needs the viz extra: pip install "fastcnn[viz]")
Writes digits_explained.png into the current folder.
"""

import matplotlib

matplotlib.use("Agg")  # draw to files only; no window

import matplotlib.pyplot as plt  # noqa: E402
from train_digits import train  # noqa: E402  (the example beside this one)

from fastcnn import viz  # noqa: E402


def main() -> None:
    model, data, _ = train()
    images, labels = data.test.tensors
    x, y = images[:4], labels[:4]  # Tensor[4, 1, 32, 32], Tensor[4]
    predicted = model.eval()(x).argmax(1)

    maps = {
        "saliency": viz.saliency(model, x, y),  # |d score / d pixel|, Tensor[4, 1, 32, 32]
        "guided backprop": viz.guided_backprop(model, x, y),  # Tensor[4, 1, 32, 32]
        "Grad-CAM": viz.grad_cam(model, x, y, layer="features.5"),  # Tensor[4, 32, 32]
    }
    fig, axes = plt.subplots(len(x), 1 + len(maps), figsize=(8, 2 * len(x)), squeeze=False)
    for i in range(len(x)):
        axes[i, 0].imshow(x[i, 0], cmap="gray")
        axes[i, 0].set_title(f"label {y[i].item()}, predicted {predicted[i].item()}", fontsize=8)
        axes[i, 0].axis("off")
        for j, (name, attribution) in enumerate(maps.items(), 1):
            method = "overlay" if name == "Grad-CAM" else "heat_map"
            viz.plot_attribution(x[i], attribution[i], method=method, ax=axes[i, j], title=name)
    fig.tight_layout()
    fig.savefig("digits_explained.png", dpi=100)
    print(f"predicted {predicted.tolist()} for labels {y.tolist()}; wrote digits_explained.png")


if __name__ == "__main__":
    main()
