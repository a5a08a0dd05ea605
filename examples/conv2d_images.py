"""Images and ``nn.Conv2d``: your own convolutional module, and the built-in CNN, on a folder.

Lesson concept: ``nn.Conv2d`` slides learned filters over an image; with batch norm, an
activation and pooling it makes the classic convolutional block. nnfit reads a class-folder
tree (``root/<label>/*.png``), decodes every image once into one uint8 tensor, normalises each
batch per channel with training-split statistics and hands your module float32 ``(N, C, H, W)``.

The folder is written here from scikit-learn's bundled 8x8 digits, upscaled to 16x16 PNGs, in a
temporary directory (no download).

Run: ``.venv/bin/python examples/conv2d_images.py``
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn

import nnfit


class DigitNet(nn.Module):
    """Two conv -> batch norm -> ReLU -> max-pool blocks, then a linear head."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, 1, 16, 16) float32, normalised
        return self.head(self.features(x).flatten(1))


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """One PNG per image under ``root/<label>/``."""
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        pixels = Image.fromarray((img * 255 / 16).astype(np.uint8)).resize((16, 16), Image.BILINEAR)
        pixels.save(root / str(label) / f"{i}.png")


def main() -> None:
    digits = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(digits.target))
    test, train = order[:360], order[360:]
    with tempfile.TemporaryDirectory() as tmp:
        write_folder(Path(tmp) / "train", digits.images[train], digits.target[train])
        write_folder(Path(tmp) / "test", digits.images[test], digits.target[test])
        torch.manual_seed(0)  # your own module: seed before building it
        learner = nnfit.fit(DigitNet(), f"{tmp}/train", epochs=15, lr=3e-3, quiet=True)
        print(f"DigitNet (nn.Conv2d): test accuracy {learner.evaluate(f'{tmp}/test')['accuracy']:.3f}")
        builtin = nnfit.fit("cnn", f"{tmp}/train", epochs=15, lr=3e-3, quiet=True)
        print(f"nnfit.models.CNN: test accuracy {builtin.evaluate(f'{tmp}/test')['accuracy']:.3f}")
        print(f"first test image predicted as {str(builtin.predict(f'{tmp}/test')[0])!r}")
        total, _ = nnfit.count_parameters(learner.model)  # (all, trainable)
        print(f"parameters: DigitNet {total:,}, CNN {nnfit.count_parameters(builtin.model)[0]:,}")


if __name__ == "__main__":
    main()
