"""A harder offline digits task: each bundled digit drawn several times under a random affine jitter and noise."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from autoprune.data._bundle import TEST_FRACTION, DataBundle
from autoprune.errors import ConfigError

__all__ = ["digits_jitter"]


def _check_options(copies: int, noise: float, scale: tuple[float, float]) -> None:
    if copies < 1:
        raise ConfigError(f"digits_jitter copies must be >= 1, found {copies!r}", key="data.options.copies")
    if not noise >= 0.0:
        raise ConfigError(f"digits_jitter noise must be >= 0, found {noise!r}", key="data.options.noise")
    if not (0 < scale[0] <= scale[1]):
        raise ConfigError(f"digits_jitter scale must be 0 < low <= high, found {scale!r}", key="data.options.scale")


def _draw(
    source: torch.Tensor,
    generator: torch.Generator,
    size: int,
    rotate: float,
    scale: tuple[float, float],
    shift: float,
    noise: float,
) -> torch.Tensor:
    """Each image of ``source`` under its own random affine jitter on a ``size`` canvas, mapped to [-1, 1], plus
    Gaussian noise; every draw from ``generator``, in a fixed order."""
    count = len(source)
    angle = (torch.rand(count, generator=generator) * 2 - 1) * math.radians(rotate)
    zoom = scale[0] + torch.rand(count, generator=generator) * (scale[1] - scale[0])
    offset = (torch.rand(count, 2, generator=generator) * 2 - 1) * shift * 2  # grid coordinates span [-1, 1]
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, offset[:, 0]], 1), torch.stack([sin, cos, offset[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, [count, 1, size, size], align_corners=False)
    drawn = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    drawn = (drawn - 0.5) / 0.5
    if noise > 0.0:
        drawn = drawn + noise * torch.randn(drawn.shape, generator=generator)
    return drawn


def digits_jitter(
    batch_size: int = 64,
    val_fraction: float = 0.2,
    seed: int = 0,
    size: int = 16,
    copies: int = 3,
    rotate: float = 20.0,
    scale: tuple[float, float] = (0.8, 1.1),
    shift: float = 0.15,
    noise: float = 0.5,
) -> DataBundle:
    """scikit-learn's bundled digits (no download), each image drawn ``copies`` times on a ``size`` canvas under a
    random rotation (up to ``rotate`` degrees), scale and shift (a fraction of the canvas), plus Gaussian pixel
    noise of std ``noise`` (pixels span [-1, 1]).

    Everything is drawn once from ``seed``, so the data set is fixed.
    Unlike plain ``digits``, a small net does not saturate it, and which layers keep their channels matters.
    """
    _check_options(copies, noise, scale)
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    raw = load_digits()
    images = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(raw.target, dtype=torch.long)
    n = len(labels)
    # Copy k of digit i sits at row k * n + i.
    order = torch.as_tensor(np.random.default_rng(seed).permutation(n))
    generator = torch.Generator().manual_seed(seed + 104_729)
    drawn = _draw(images.repeat(copies, 1, 1, 1), generator, size, rotate, scale, shift, noise)
    # Split the originals (as ``digits`` does), then give each split all copies of its digits: the test and
    # validation figures are not inflated by near-duplicates of training images.
    n_test = int(round(n * TEST_FRACTION))
    n_val = int(round((n - n_test) * val_fraction))
    parts = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    copies_of = [torch.cat([p + k * n for k in range(copies)]) for p in parts]
    targets = labels.repeat(copies)

    def loader(idx: torch.Tensor, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(TensorDataset(drawn[idx], targets[idx]), batch_size=batch_size, shuffle=shuffle, generator=generator)

    return DataBundle(
        train=loader(copies_of[2], True),
        val=loader(copies_of[1], False),
        test=loader(copies_of[0], False),
        num_classes=10,
        input_shape=(1, size, size),
    )
