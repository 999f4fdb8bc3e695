from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from autoprune.data._bundle import DataBundle, split_tensors
from autoprune.errors import ConfigError

__all__ = ["digits"]


def digits(
    batch_size: int = 64, val_fraction: float = 0.2, seed: int = 0, size: int = 16, noise: float = 0.0
) -> DataBundle:
    """scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes), upsampled to ``size``.

    The test split (20%) is fixed by ``seed``; the validation split is carved from the rest. ``noise`` adds
    fixed Gaussian pixel noise of that standard deviation (pixels span [-1, 1]), drawn once from ``seed``:
    a harder, unsaturated variant of the same task.
    """
    if not noise >= 0.0:
        raise ConfigError(f"digits noise must be >= 0, found {noise!r}", key="data.options.noise")
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    raw = load_digits()
    images = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = (images - 0.5) / 0.5
    if noise > 0.0:
        images = images + noise * torch.randn(images.shape, generator=torch.Generator().manual_seed(seed + 7919))
    labels = torch.tensor(raw.target, dtype=torch.long)

    order = torch.as_tensor(np.random.default_rng(seed).permutation(len(labels)))
    return split_tensors(
        images, labels, order, batch_size=batch_size, val_fraction=val_fraction, seed=seed, num_classes=10
    )
