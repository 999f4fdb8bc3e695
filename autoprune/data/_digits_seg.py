from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from autoprune.data._bundle import DataBundle, split_tensors

__all__ = ["BACKGROUND", "digits_seg"]

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
    return split_tensors(
        images, masks, order, batch_size=batch_size, val_fraction=val_fraction, seed=seed, num_classes=11
    )
