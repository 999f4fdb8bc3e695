from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from autoprune.data._bundle import DataBundle

__all__ = ["BACKGROUND", "digits_seg"]

TEST_FRACTION = 0.2
BACKGROUND = 0  # class 0 is the background; digit d is class d + 1


def digits_seg(
    batch_size: int = 64,
    val_fraction: float = 0.2,
    seed: int = 0,
    size: int = 20,
    digit_size: int = 12,
    threshold: float = 0.35,
) -> DataBundle:
    """Segmentation made from scikit-learn's bundled digits: each 8x8 digit, upsampled to ``digit_size``, is
    placed at a random spot on a ``size`` x ``size`` canvas. The target marks the digit's pixels (intensity
    above ``threshold``) with class ``digit + 1`` and every other pixel with class 0: 11 classes.

    Splits follow ``digits``: a fixed 20% test split, the validation split carved from the rest.
    """
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    if not 8 <= digit_size <= size:
        raise ValueError(f"digits_seg: digit_size must lie in [8, size={size}], found {digit_size}")
    raw = load_digits()
    glyphs = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    glyphs = F.interpolate(glyphs, size=(digit_size, digit_size), mode="bilinear", align_corners=False)
    labels = torch.tensor(raw.target, dtype=torch.long)
    rng = np.random.default_rng(seed)
    offsets = rng.integers(0, size - digit_size + 1, size=(len(labels), 2))

    n = len(labels)
    images = torch.zeros(n, 1, size, size)
    masks = torch.full((n, size, size), BACKGROUND, dtype=torch.long)
    for i, (top, left) in enumerate(offsets.tolist()):
        glyph = glyphs[i, 0]
        images[i, 0, top : top + digit_size, left : left + digit_size] = glyph
        region = masks[i, top : top + digit_size, left : left + digit_size]
        region[glyph > threshold] = int(labels[i]) + 1
    images = (images - 0.5) / 0.5

    order = torch.as_tensor(rng.permutation(n))
    n_test = int(round(n * TEST_FRACTION))
    n_val = int(round((n - n_test) * val_fraction))
    test_idx, val_idx, train_idx = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]

    def loader(idx: torch.Tensor, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(
            TensorDataset(images[idx], masks[idx]), batch_size=batch_size, shuffle=shuffle, generator=generator
        )

    return DataBundle(
        train=loader(train_idx, True),
        val=loader(val_idx, False),
        test=loader(test_idx, False),
        num_classes=11,
        input_shape=(1, size, size),
    )
