from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from autoprune.data._bundle import DataBundle
from autoprune.errors import ConfigError

__all__ = ["digits"]

TEST_FRACTION = 0.2


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
    n_test = int(round(len(labels) * TEST_FRACTION))
    n_val = int(round((len(labels) - n_test) * val_fraction))
    test_idx, val_idx, train_idx = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]

    def loader(idx: torch.Tensor, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(
            TensorDataset(images[idx], labels[idx]), batch_size=batch_size, shuffle=shuffle, generator=generator
        )

    return DataBundle(
        train=loader(train_idx, True),
        val=loader(val_idx, False),
        test=loader(test_idx, False),
        num_classes=10,
        input_shape=(1, size, size),
    )
