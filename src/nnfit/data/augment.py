"""Images in memory as a training source: uint8 (or float32) pixels normalised per batch on the
device, and light augmentation (random crop with zero padding, horizontal flip) on whole
batches as tensor ops, training batches only.

Every batch's random draws come from its own generator, seeded from one number drawn from the
trainer's data generator when the epoch's batches are made and from the batch's index: an
epoch replayed from its start state (an exact resume skipping ``start`` batches) augments
every batch exactly as the uninterrupted run did.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .sources import Batch, TensorData

AUGMENTS = ("none", "crop", "flip", "crop,flip")
# Pixel values in one evaluation batch at most: 4096 images of 64x64 RGB, 85 of 224x224 RGB.
EVAL_VALUES = 2**24
_MASK64 = (1 << 64) - 1


def crop_padding(height: int, width: int) -> int:
    """The zero padding (and largest shift) of a random crop: an eighth of the shorter side,
    at least one pixel (4 px for 32x32 images, 1 px for 8x8 digits)."""
    return max(1, round(min(height, width) / 8))


def _mix(seed: int, index: int) -> int:
    """A well-spread 63-bit seed for batch ``index`` of an epoch seeded ``seed`` (splitmix64)."""
    z = (seed + (index + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


def augment_batch(x: Tensor, ops: Sequence[str], seed: int) -> Tensor:
    """Randomly crop (after zero padding) and/or horizontally flip every image of a batch.

    Args:
        x: the batch, any dtype, on any device.
        ops: "crop" and/or "flip".
        seed: seeds this batch's draws (made on the CPU, so every device draws the same).

    Shape:
        x: (N, C, H, W); returns the same shape and dtype.

    Example:
        >>> x = torch.arange(16, dtype=torch.uint8).reshape(1, 1, 4, 4)
        >>> torch.equal(augment_batch(x, ["crop", "flip"], 7), augment_batch(x, ["crop", "flip"], 7))
        True
    """
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = x.shape
    if "crop" in ops:
        p = crop_padding(h, w)
        shifts = torch.randint(0, 2 * p + 1, (2, n), generator=g).to(x.device, non_blocking=True)
        wide = w + 2 * p
        padded = F.pad(x, (p, p, p, p)).reshape(n, c, (h + 2 * p) * wide)
        rows = shifts[0].view(n, 1, 1) + torch.arange(h, device=x.device).view(1, h, 1)
        cols = shifts[1].view(n, 1, 1) + torch.arange(w, device=x.device).view(1, 1, w)
        # one gather: the batch's crops as flat indices into the padded images (no Python per image)
        index = (rows * wide + cols).reshape(n, 1, h * w).expand(n, c, h * w)
        x = padded.gather(2, index).reshape(n, c, h, w)
    if "flip" in ops:
        flip = (torch.rand(n, generator=g) < 0.5).to(x.device, non_blocking=True)
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    return x


class ImageData(TensorData):
    """Images held as one tensor (uint8 for decoded files), normalised per batch on the device.

    Each batch reaches the model as ``(x.float() - mean) / std`` (float32), so memory holds the
    images at one byte per pixel. With ``augment``, training batches (``shuffle=True``) are
    randomly cropped and/or flipped first; evaluation batches never are.

    Args:
        pixels: the images.
        target: the training target, or None.
        mean, std: per-channel statistics of the training split.
        augment: "crop" and/or "flip", or empty.

    Shape:
        pixels: (N, C, H, W); mean, std: (C,); batches: (n, C, H, W) float32.

    Example:
        >>> d = ImageData(torch.full((3, 1, 2, 2), 4, dtype=torch.uint8), torch.arange(3),
        ...               mean=[2.0], std=[2.0])
        >>> [x.flatten().tolist() for (x,), _ in d.batches(2)]
        [[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    """

    def __init__(self, pixels: Tensor, target: Tensor | None = None, *,
                 mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor,
                 augment: Sequence[str] = ()) -> None:
        super().__init__((pixels,), target)
        as_stat = lambda v: torch.as_tensor(v, dtype=torch.float32).reshape(1, -1, 1, 1)  # noqa: E731
        self.mean, self.std = as_stat(mean), as_stat(std)
        self.augment = tuple(augment)

    @property
    def pixels(self) -> Tensor:
        return self.inputs[0]

    def _like(self, pixels: Tensor, target: Tensor | None) -> ImageData:
        d = pixels.device
        return ImageData(pixels, target, mean=self.mean.to(d), std=self.std.to(d), augment=self.augment)

    def to(self, device: torch.device) -> ImageData:
        """The images, target and statistics on ``device`` (moved once)."""
        return self._like(self.pixels.to(device), None if self.target is None else self.target.to(device))

    def subset(self, idx: np.ndarray | Tensor) -> ImageData:
        """The images ``idx`` as a new ImageData."""
        i = torch.as_tensor(idx, dtype=torch.long).to(self.pixels.device)
        return self._like(self.pixels[i], None if self.target is None else self.target[i])

    def batches(
        self, batch_size: int, *, shuffle: bool = False,
        generator: torch.Generator | None = None, drop_single: bool = False, start: int = 0,
    ) -> Iterator[Batch]:
        """Normalised batches, as :meth:`TensorData.batches` orders them; augmented when
        shuffled (training) and ``augment`` is set. The epoch's augmentation seed is drawn from
        ``generator`` here, right after the order, so a replayed epoch draws both again.

        Evaluation batches (not shuffled) hold at most ``EVAL_VALUES`` pixel values (at least
        one image): the default evaluation batch of 4096 images of 224x224 RGB would need tens
        of GB of activations in a CNN's first stage."""
        if not shuffle:
            batch_size = min(batch_size, max(1, EVAL_VALUES // max(1, self.pixels[0].numel())))
        rows = super().batches(batch_size, shuffle=shuffle, generator=generator,
                               drop_single=drop_single, start=start)
        seed = None
        if shuffle and self.augment:
            seed = int(torch.randint(0, 2**62, (), generator=generator))
        return self._normalised(rows, seed, start)

    def _normalised(self, rows: Iterator[Batch], seed: int | None, start: int) -> Iterator[Batch]:
        mean, std = self.mean, self.std
        for i, (inputs, target) in enumerate(rows, start):
            x = inputs[0]
            if seed is not None:
                x = augment_batch(x, self.augment, _mix(seed, i))
            yield ((x.float() - mean) / std,), target


class ImageNormalize(nn.Module):
    """The fitted per-channel normalisation of images as a module: ``(x.float() - mean) / std``,
    as the training source computes it (bitwise equal), to put in front of a model.

    Args:
        mean, std: per-channel statistics.

    Shape:
        input (N, C, H, W) of any dtype (uint8 pixels); output the same shape, float32.

    Example:
        >>> ImageNormalize([1.0], [2.0])(torch.full((1, 1, 1, 2), 3, dtype=torch.uint8))
        tensor([[[[1., 1.]]]])
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x.float() - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"channels={self.mean.shape[1]}"
